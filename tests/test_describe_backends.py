"""Describe backends for real models: a tiny random Hugging Face vision-language model saved to a temp dir
(the real loading, chat template and batched generation path) and an OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.describe import OpenAIDescriber, TransformersDescriber, describe_dataset, get_task
from medgen_monai.describe.run import read_bank_lines
from medgen_monai.phantoms import get_phantom

LAYOUTS = {"derm": "isic", "cxr": "mimic_cxr"}
IMAGE_SIZE = 48


@pytest.fixture(scope="module")
def datalists(tmp_path_factory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("phantoms")
    return {
        kind: read_dataset(
            layout, write_dataset(layout, get_phantom(kind).generate_many(4, seed=5, size=IMAGE_SIZE), root / kind)
        )
        for kind, layout in LAYOUTS.items()
    }


# ---- a tiny random LLaVA ----------------------------------------------------------------------------
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image> {% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_tiny_vlm(path: Path) -> Path:
    """A random LLaVA (tiny CLIP vision tower + tiny Llama) with a word-level tokenizer trained on a few sentences."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    image_processor_class = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    words = Tokenizer(models.WordLevel(unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [
        "step modality view attributes description json object image lesion",
        'system user assistant : { } " ,',
        "round oval irregular small medium large black red network globules centre heart effusion none",
    ]
    words.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["<unk>", "<pad>", "<s>", "</s>", "<image>"])
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=words, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    vision = CLIPVisionConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        projection_dim=16,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(path)
    image_processor = image_processor_class(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        patch_size=8,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_transformers_backend_runs_and_rejects_gibberish(tiny_vlm, datalists, tmp_path, kind):
    task = get_task(kind)
    describer = TransformersDescriber(tiny_vlm, task, batch_size=3, max_new_tokens=12, device="cpu", reveal_class=True)
    masks = []
    generate = describer.net.generate

    def spy(**inputs):
        masks.append(inputs["attention_mask"].clone())
        return generate(**inputs)

    describer.net.generate = spy
    summary = describe_dataset(datalists[kind], task, describer, tmp_path / "bank", batch_size=4, progress=False)
    assert summary["described"] == 4 and summary["accepted"] == 0 and summary["rejected"] == 4
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert meta["rejection_rate"] == 1.0 and meta["backend"] == "transformers" and meta["model"] == str(tiny_vlm)
    rejected = read_bank_lines(tmp_path / "bank" / "rejected.jsonl")
    assert sorted(r["id"] for r in rejected) == sorted(r["id"] for r in datalists[kind])
    for line in rejected:
        assert (
            line["reasons"]
            and line["raw"].strip()
            and line["category"] == task.category(next(r for r in datalists[kind] if r["id"] == line["id"]))
        )
    # batches of 3 and 1 (describer batch size inside the run's batch of 4); left padding: every prompt ends at the
    # last position, where generation starts
    assert [m.shape[0] for m in masks] == [3, 1]
    assert all(bool(m[:, -1].all()) for m in masks)
    assert bool((masks[0] == 0).any()), "the prompts of the first batch should differ in length (the revealed class)"
    assert describer.tokenizer.padding_side == "left"


def test_transformers_backend_merges_the_system_message_when_the_template_rejects_it(tiny_vlm, datalists):
    describer = TransformersDescriber(tiny_vlm, "derm", device="cpu")
    record = datalists["derm"][0]
    assert describer._prompt(record).startswith("system: ")
    describer.processor.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        + CHAT_TEMPLATE
    )
    prompt = describer._prompt(record)
    assert prompt.startswith("user: <image> You are a careful medical image annotator") and "system:" not in prompt


def test_transformers_backend_names_a_bad_path(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path / "nowhere")):
        TransformersDescriber(tmp_path / "nowhere", "derm")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="broken"):
        TransformersDescriber(tmp_path / "broken", "derm")


# ---- an OpenAI-compatible server ----------------------------------------------------------------------
VALID = {
    "modality": "dermoscopy",
    "view": "dermoscopy image of a skin lesion",
    "attributes": {
        "shape": "round",
        "size": "small",
        "colour": "dark_brown",
        "border": "well_defined",
        "pattern": "network",
        "position": "centre",
    },
    "description": "A small round dark brown lesion in the centre with a well-defined border and a pigment network.",
}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200 if self.path == "/v1/models" else 404, b'{"data": [{"id": "tiny"}]}')

    def do_POST(self) -> None:
        state = self.server.state
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state["lock"]:
            state["requests"].append((self.path, request))
            state["in_flight"] += 1
            state["max_in_flight"] = max(state["max_in_flight"], state["in_flight"])
            if state["in_flight"] >= 2:
                state["overlapped"].set()
            count = len(state["requests"])
        try:
            status, body = self._answer(state, count)
        finally:
            # leave the count before the answer goes out: the client sends its next request as soon as it has read
            # this one, and counting this handler until after the write would show a third request that never overlapped
            with state["lock"]:
                state["in_flight"] -= 1
        try:
            self._send(status, body)
        except BrokenPipeError:  # the client gave up first (the timeout test): nothing to answer
            pass

    @staticmethod
    def _answer(state: dict, count: int) -> tuple[int, bytes]:
        mode = state["mode"]
        if mode == "slow":
            time.sleep(1.0)
        if mode == "parallel":
            # hold each request until two overlap (a fixed sleep alone missed the overlap on a loaded machine),
            # then a little longer, so that a client exceeding its limit would show a third in flight
            state["overlapped"].wait(10.0)
            time.sleep(0.3)
        if mode == "always500" or (mode == "500-then-ok" and count == 1):
            return 500, b'{"error": "internal"}'
        if mode == "429-then-ok" and count == 1:
            return 429, b'{"error": "busy"}'
        if mode == "400":
            return 400, b'{"error": "bad request: unknown model"}'
        if mode == "malformed":
            return 200, b'{"choices": [{"message": '
        answer = f"Step 1: a dermoscopy image.\n```json\n{json.dumps(VALID)}\n```"
        return 200, json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = {
        "mode": "ok",
        "requests": [],
        "lock": threading.Lock(),
        "in_flight": 0,
        "max_in_flight": 0,
        "overlapped": threading.Event(),
    }
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _url(httpd) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_openai_backend_sends_the_prompt_and_a_png_and_stores_the_answer(server, datalists, tmp_path):
    task = get_task("derm")
    describer = OpenAIDescriber(_url(server), "tiny-vlm", task, timeout=5, backoff=0.01)
    summary = describe_dataset(datalists["derm"][:2], task, describer, tmp_path / "bank", progress=False)
    assert summary["accepted"] == 2 and summary["rejected"] == 0
    lines = [line for path in (tmp_path / "bank").glob("*.jsonl") for line in read_bank_lines(path)]
    assert all(line["backend"] == "openai" and line["model"] == "tiny-vlm" for line in lines)
    assert all(line["attributes"] == VALID["attributes"] for line in lines)
    path, request = server.state["requests"][0]
    assert path == "/v1/chat/completions" and request["model"] == "tiny-vlm" and request["temperature"] == 0
    user = request["messages"][-1]["content"]
    image_part = next(p for p in user if p["type"] == "image_url")
    prefix = "data:image/png;base64,"
    assert image_part["image_url"]["url"].startswith(prefix)
    image = Image.open(io.BytesIO(base64.b64decode(image_part["image_url"]["url"][len(prefix) :])))
    assert image.format == "PNG" and image.size == (IMAGE_SIZE, IMAGE_SIZE)
    prompt = next(p["text"] for p in user if p["type"] == "text")
    assert "Step 2" in prompt and all(a.name in prompt for a in task.attributes)
    assert request["messages"][0]["role"] == "system" and isinstance(request["messages"][0]["content"], str)


@pytest.mark.parametrize(
    "mode, accepted, reason, requests",
    [
        ("500-then-ok", 1, None, 2),
        ("429-then-ok", 1, None, 2),
        ("always500", 0, "transient", 3),
        ("400", 0, "request_failed: client error 400", 1),
        ("malformed", 0, "request_failed: malformed JSON in the server's response", 1),
        ("slow", 0, "transient", 2),
    ],
)
def test_openai_backend_retries_and_turns_failures_into_rejections(
    server, datalists, tmp_path, mode, accepted, reason, requests
):
    server.state["mode"] = mode
    task = get_task("derm")
    retries = 1 if mode == "slow" else 2
    describer = OpenAIDescriber(
        _url(server), "tiny-vlm", task, timeout=0.3 if mode == "slow" else 5, max_retries=retries, backoff=0.01
    )
    summary = describe_dataset(datalists["derm"][:1], task, describer, tmp_path / "bank", progress=False)
    assert summary["accepted"] == accepted and len(server.state["requests"]) == requests
    if reason == "transient":
        # a server error or a timeout after the retries is no answer: nothing recorded, the next run asks again
        assert (
            summary["failed"] == 1 and summary["rejected"] == 0 and not (tmp_path / "bank" / "rejected.jsonl").exists()
        )
        assert json.loads((tmp_path / "bank" / "bank.json").read_text())["rejected"] == 0
        server.state["mode"] = "ok"
        again = describe_dataset(datalists["derm"][:1], task, describer, tmp_path / "bank", progress=False)
        assert again["accepted"] == 1 and again["skipped"] == 0 and again["failed"] == 0
    elif reason is not None:
        assert summary["rejected"] == 1 - accepted and summary["failed"] == 0
        (line,) = read_bank_lines(tmp_path / "bank" / "rejected.jsonl")
        assert line["reasons"][0].startswith(reason), line["reasons"]
        assert json.loads((tmp_path / "bank" / "bank.json").read_text())["rejection_rate"] == 1.0


def test_openai_backend_limits_concurrency(server, datalists):
    server.state["mode"] = "parallel"
    describer = OpenAIDescriber(_url(server), "tiny-vlm", "derm", concurrency=2)
    records = datalists["derm"]
    images = [Image.open(r["image"]) for r in records]
    answers = describer.describe(images, records)
    assert len(answers) == 4 and all(json.loads(a.split("```json\n")[1].split("\n```")[0]) == VALID for a in answers)
    assert server.state["max_in_flight"] == 2


def test_openai_backend_fails_fast_on_an_unreachable_server():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.monotonic()
    with pytest.raises(ValueError, match=f"cannot reach an OpenAI-compatible server at {url}"):
        OpenAIDescriber(url, "tiny-vlm", "derm")
    assert time.monotonic() - start < 5
    with pytest.raises(ValueError, match="http"):
        OpenAIDescriber("127.0.0.1:8000", "tiny-vlm", "derm")
