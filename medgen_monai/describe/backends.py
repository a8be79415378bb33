"""Describer backends: who answers the describe prompt. One interface, three implementations.

- :class:`OracleDescriber`: writes the answer from the record's known ``"attributes"`` (phantoms, or a
  dataset with attribute metadata) with the task's composer; no model, no image.
- :class:`TransformersDescriber`: a local Hugging Face vision-language model (``AutoProcessor`` +
  ``AutoModelForImageTextToText``, ``local_files_only``), its chat template, batched greedy generation.
- :class:`OpenAIDescriber`: any OpenAI-compatible chat-completions server (vLLM, Ollama, llama.cpp
  server) with the image sent as a base64 PNG data URL; timeouts, retries with exponential backoff, a
  concurrency limit. Standard library only (``urllib.request``).

Every backend returns one raw text answer per image; :func:`~medgen_monai.describe.validation.validate`
judges it. A backend that could not get an answer for one image returns a :class:`RequestFailed` for it
(a ``str`` holding the reason) instead of failing the whole run.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import http.client
import io
import json
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .prompts import build_messages
from .tasks import DescribeTask, get_task

__all__ = [
    "Describer",
    "OracleDescriber",
    "TransformersDescriber",
    "OpenAIDescriber",
    "RequestFailed",
    "to_pil",
    "BACKENDS",
    "get_describer",
]

ImageLike = Image.Image | np.ndarray


class RequestFailed(str):
    """A backend's failure to answer for one image; the string is the reason (e.g. "server error 500 after 4 tries").

    A final failure (``transient=False``: a client error, a malformed response) is recorded by
    ``describe_dataset`` in ``rejected.jsonl`` as ``"request_failed: <reason>"``. A transient one (server
    errors, timeouts, lost connections, after the backend's own retries) is not recorded: the next run asks
    again.
    """

    transient: bool

    def __new__(cls, reason: str, transient: bool = False) -> RequestFailed:
        failure = super().__new__(cls, reason)
        failure.transient = bool(transient)
        return failure

    @property
    def reason(self) -> str:
        return str(self)


def to_pil(image: ImageLike, rgb: bool = True) -> Image.Image:
    """A PIL image from a PIL image or an array (``(H, W)`` or ``(H, W, C)``, uint8, or float in [0, 1]).

    Args:
        image: the image.
        rgb: convert to RGB (vision-language models expect 3 channels; a grayscale X-ray is replicated).
    """
    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
            raise ValueError(f"image: expected an (H, W) or (H, W, 3) array, got shape {array.shape}")
        if array.dtype != np.uint8:
            array = np.asarray(array, dtype=np.float64)
            scale = 255.0 if array.size and array.max() <= 1.0 else 1.0
            array = np.clip(np.rint(array * scale), 0, 255).astype(np.uint8)
        image = Image.fromarray(array)
    return image.convert("RGB") if rgb and image.mode != "RGB" else image


class Describer(abc.ABC):
    """Answers the describe prompt of ``task`` for a batch of images.

    Attributes:
        name: the backend name recorded in the bank (``oracle``, ``transformers``, ``openai``).
        model: the model recorded in the bank (a path or a served model name).
        task: the describe task.
        needs_images: whether :meth:`describe` looks at the images (the oracle does not).
    """

    name: ClassVar[str]
    needs_images: ClassVar[bool] = True

    def __init__(self, task: DescribeTask | str) -> None:
        self.task = get_task(task)
        self.model = ""

    def check_record(self, record: Mapping[str, Any]) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Raise ``ValueError`` naming the record if this backend cannot describe it (checked before any work)."""

    @abc.abstractmethod
    def describe(self, images: Sequence[ImageLike | None], records: Sequence[Mapping[str, Any]]) -> list[str]:
        """One raw answer per image (a :class:`RequestFailed` where the backend could not get one).

        Args:
            images: the images (PIL or ``(H, W[, C])`` arrays); ``None`` items when ``needs_images`` is False.
            records: the datalist records of the images (same length).
        """

    def _messages(self, record: Mapping[str, Any], reveal_class: bool, system: bool = True) -> list[dict[str, Any]]:
        category = self.task.category(record) if reveal_class else None
        return build_messages(self.task, category, reveal_class, system=system)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(task={self.task.name!r}, model={self.model!r})"


# ---- oracle ------------------------------------------------------------------------------------------
class OracleDescriber(Describer):
    """Writes the answer a perfect model would give, from the record's ground-truth ``"attributes"``.

    The description is :meth:`DescribeTask.compose` of the attributes and the record's class, with a
    generator seeded by ``(seed, sha256(record id))``: the same id gives the same text in any batch or run.

    Args:
        task: the describe task (or its name).
        seed: phrasing seed.
    """

    name = "oracle"
    needs_images = False

    def __init__(self, task: DescribeTask | str, seed: int = 0) -> None:
        super().__init__(task)
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)
        self.model = "attribute-oracle"

    def check_record(self, record: Mapping[str, Any]) -> None:
        where = f"record {record.get('id', '?')!r} ({record.get(self.task.image_key, '?')})"
        if not isinstance(record.get("attributes"), Mapping):
            raise ValueError(
                f"{where}: no 'attributes'; the oracle backend writes descriptions from ground-truth attributes "
                f"(phantoms with phantom_attributes.jsonl, or a datalist with an 'attributes' dict per record). "
                f"Use --backend transformers or openai for images without them"
            )
        self.task.check_attributes(record["attributes"], where=f"{where}: 'attributes'")

    def describe(self, images: Sequence[ImageLike | None], records: Sequence[Mapping[str, Any]]) -> list[str]:
        answers = []
        for record in records:
            self.check_record(record)
            attributes = self.task.check_attributes(record["attributes"])
            key = int.from_bytes(hashlib.sha256(str(record["id"]).encode()).digest()[:8], "little")
            rng = np.random.default_rng([self.seed, key])
            answer = {
                "modality": self.task.modality,
                "view": self.task.view,
                "attributes": attributes,
                "description": self.task.compose(attributes, rng, self.task.category(record)),
            }
            answers.append(json.dumps(answer))
        return answers


# ---- local Hugging Face model ------------------------------------------------------------------------
class TransformersDescriber(Describer):
    """A local Hugging Face vision-language model (anything ``AutoModelForImageTextToText`` loads: LLaVA,
    Qwen2-VL, Idefics3/SmolVLM, PaliGemma, Gemma 3, ...) prompted through its processor's chat template.

    Loading is offline (``local_files_only=True``): ``model_path`` is a folder with the config, the weights
    and the processor files (e.g. from ``huggingface-cli download``). Batches are left-padded and decoded
    greedily; only the new tokens are returned.

    Args:
        model_path: the local model folder.
        task: the describe task (or its name).
        batch_size: images per ``generate`` call.
        max_new_tokens: answer length limit (the chain of thought plus the JSON need a few hundred tokens).
        device: ``"cuda"``, ``"cpu"``, ... (default: CUDA when available).
        dtype: ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"`` or a ``torch.dtype`` (default float32
            on CPU, bfloat16 on CUDA).
        reveal_class: put the known class in the prompt.
    """

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        task: DescribeTask | str,
        batch_size: int = 4,
        max_new_tokens: int = 512,
        device: str | None = None,
        dtype: Any = None,
        reveal_class: bool = False,
    ) -> None:
        super().__init__(task)
        import torch
        import transformers
        from packaging.version import Version
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(max_new_tokens) < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        path = Path(model_path).expanduser()
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ValueError(
                f"--model: {path} is not a local Hugging Face model folder (expected a directory with config.json, "
                "the weights and the processor files; the transformers backend never downloads, so fetch the model "
                "first, e.g. huggingface-cli download ORG/NAME --local-dir DIR)"
            )
        self.batch_size, self.max_new_tokens, self.reveal_class = (
            int(batch_size),
            int(max_new_tokens),
            bool(reveal_class),
        )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        elif isinstance(dtype, str) and dtype != "auto":
            if not isinstance(getattr(torch, dtype, None), torch.dtype):
                raise ValueError(
                    f"dtype: expected a torch dtype name such as float32 or bfloat16, or 'auto', got {dtype!r}"
                )
            dtype = getattr(torch, dtype)
        # transformers renamed ``torch_dtype`` to ``dtype`` in 4.56
        dtype_key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
        try:
            self.processor = AutoProcessor.from_pretrained(str(path), local_files_only=True)
            self.net = AutoModelForImageTextToText.from_pretrained(
                str(path), local_files_only=True, **{dtype_key: dtype}
            )
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"--model: {path}: cannot load a vision-language model with AutoProcessor + "
                f"AutoModelForImageTextToText ({type(e).__name__}: {e})"
            ) from e
        self.net.to(self.device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError(f"--model: {path}: the processor has no tokenizer")
        # batched generation of a decoder: pad on the left so every prompt ends where generation starts
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if (
            getattr(self.processor, "chat_template", None) is None
            and getattr(self.tokenizer, "chat_template", None) is None
        ):
            raise ValueError(
                f"--model: {path}: the processor has no chat template (chat_template.jinja / "
                "chat_template.json); the describe prompt needs an instruction-tuned model"
            )
        self.model = str(path)
        self._system = True  # set to False when the chat template rejects a system message

    def _prompt(self, record: Mapping[str, Any]) -> str:
        if self._system:
            try:
                return self.processor.apply_chat_template(
                    self._messages(record, self.reveal_class, True), add_generation_prompt=True, tokenize=False
                )
            except Exception as e:  # noqa: BLE001 - jinja raises TemplateError (via raise_exception) for a system role
                if "system" not in str(e).lower():
                    raise
                self._system = False
        return self.processor.apply_chat_template(
            self._messages(record, self.reveal_class, False), add_generation_prompt=True, tokenize=False
        )

    def describe(self, images: Sequence[ImageLike | None], records: Sequence[Mapping[str, Any]]) -> list[str]:
        import torch

        if len(images) != len(records):
            raise ValueError(f"describe: {len(images)} images for {len(records)} records")
        answers: list[str] = []
        for start in range(0, len(records), self.batch_size):
            chunk = slice(start, start + self.batch_size)
            pictures = [to_pil(image) for image in images[chunk]]
            texts = [self._prompt(record) for record in records[chunk]]
            inputs = self.processor(text=texts, images=[[p] for p in pictures], padding=True, return_tensors="pt")
            inputs = inputs.to(self.device)
            for key, value in inputs.items():
                if torch.is_tensor(value) and torch.is_floating_point(value):
                    inputs[key] = value.to(self.net.dtype)
            with torch.inference_mode():
                output = self.net.generate(
                    **inputs,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    num_beams=1,
                    pad_token_id=self.tokenizer.pad_token_id,
                )
            new_tokens = output[:, inputs["input_ids"].shape[1] :]
            answers.extend(self.processor.batch_decode(new_tokens, skip_special_tokens=True))
        return answers


# ---- OpenAI-compatible server ------------------------------------------------------------------------
def _png_data_url(image: ImageLike) -> str:
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class OpenAIDescriber(Describer):
    """An OpenAI-compatible chat-completions server: vLLM (``vllm serve MODEL``), Ollama (``/v1``), the
    llama.cpp server, or a hosted API.

    Each image is one ``POST <base_url>/chat/completions`` with the prompt and the image as a base64 PNG
    ``image_url``, temperature 0. Connection errors, timeouts, HTTP 429 and 5xx are retried with
    exponential backoff (``backoff * 2**k`` seconds); other 4xx are not retried. An image whose request
    still fails gets a :class:`RequestFailed` answer (a rejection with the reason), the run goes on.
    The server is probed once at construction (``GET <base_url>/models``) so that a wrong URL fails at
    once, naming the URL.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (vLLM) or ``http://127.0.0.1:11434/v1`` (Ollama).
        model: the served model name (the ``model`` field of the request).
        task: the describe task (or its name).
        api_key: sent as ``Authorization: Bearer``; local servers usually need none.
        timeout: seconds per request (connect and each read).
        max_retries: retries after the first try (``max_retries + 1`` tries in all).
        backoff: the first retry's delay in seconds.
        concurrency: requests in flight at once.
        max_tokens: answer length limit.
        reveal_class: put the known class in the prompt.
        check: probe the server at construction.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        task: DescribeTask | str,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        concurrency: int = 4,
        max_tokens: int = 1024,
        reveal_class: bool = False,
        check: bool = True,
    ) -> None:
        super().__init__(task)
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--url: expected an http(s) URL such as http://127.0.0.1:8000/v1, got {base_url!r}")
        if not isinstance(model, str) or not model.strip():
            raise ValueError(
                "--model: the openai backend needs the served model name (e.g. Qwen/Qwen2.5-VL-7B-Instruct)"
            )
        if float(timeout) <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if int(max_retries) < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if float(backoff) < 0:
            raise ValueError(f"backoff must be >= 0 seconds, got {backoff}")
        if int(concurrency) < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if int(max_tokens) < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.base_url = base_url.rstrip("/")
        self.endpoint = f"{self.base_url}/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout, self.max_retries, self.backoff = float(timeout), int(max_retries), float(backoff)
        self.concurrency, self.max_tokens, self.reveal_class = int(concurrency), int(max_tokens), bool(reveal_class)
        if check:
            self.check_server()

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def check_server(self) -> None:
        """Fail fast (``ValueError`` naming the URL) when nothing answers at ``base_url``; any HTTP answer is fine."""
        request = urllib.request.Request(f"{self.base_url}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout, 10.0)) as response:
                response.read()
        except urllib.error.HTTPError:
            return  # the server is there (a 404 or 401 on /models says nothing about chat completions)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            raise ValueError(
                f"--url: cannot reach an OpenAI-compatible server at {self.base_url} ({reason}); start it "
                "(e.g. vllm serve MODEL, or ollama serve and use http://127.0.0.1:11434/v1) "
                "or fix the URL"
            ) from None

    def messages(self, image: ImageLike, record: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The request's messages: the system text as a string, the image as a base64 PNG data URL."""
        messages = []
        for message in self._messages(record, self.reveal_class):
            if message["role"] == "system":
                messages.append({"role": "system", "content": "\n".join(c["text"] for c in message["content"])})
                continue
            content = [
                {"type": "image_url", "image_url": {"url": _png_data_url(image)}} if c["type"] == "image" else c
                for c in message["content"]
            ]
            messages.append({"role": message["role"], "content": content})
        return messages

    def _ask(self, body: bytes) -> str:
        tries = self.max_retries + 1
        last = ""
        for attempt in range(tries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(self.endpoint, data=body, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as e:
                detail = e.read()[:300].decode("utf-8", "replace")
                if e.code == 429 or e.code >= 500:
                    last = f"server error {e.code}"
                    continue
                return RequestFailed(f"client error {e.code} from {self.endpoint} (not retried): {detail}")
            except TimeoutError:
                last = f"timed out ({self.timeout:g} s)"
                continue
            except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
                reason = getattr(e, "reason", e)
                last = (
                    f"timed out ({self.timeout:g} s)"
                    if isinstance(reason, (TimeoutError, socket.timeout))
                    else f"connection failed ({reason})"
                )
                continue
            return self._content(payload)
        return RequestFailed(f"{last} after {tries} {'try' if tries == 1 else 'tries'}", transient=True)

    @staticmethod
    def _content(payload: bytes) -> str:
        """The answer text of a chat-completions response body, or a :class:`RequestFailed`."""
        try:
            data = json.loads(payload)
        except ValueError:
            return RequestFailed(f"malformed JSON in the server's response: {payload[:200]!r}")
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            return RequestFailed(f"unexpected response shape (no choices[0].message.content): {str(data)[:200]}")
        if isinstance(content, list):  # some servers return content parts
            content = "".join(part.get("text", "") for part in content if isinstance(part, Mapping))
        if not isinstance(content, str):
            return RequestFailed(f"the response's message content is {type(content).__name__}, not text")
        return content

    def describe(self, images: Sequence[ImageLike | None], records: Sequence[Mapping[str, Any]]) -> list[str]:
        if len(images) != len(records):
            raise ValueError(f"describe: {len(images)} images for {len(records)} records")
        if not records:
            return []
        bodies = [
            json.dumps(
                {
                    "model": self.model,
                    "messages": self.messages(image, record),
                    "temperature": 0,
                    "max_tokens": self.max_tokens,
                }
            ).encode()
            for image, record in zip(images, records)
        ]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(self._ask, bodies))


BACKENDS: tuple[str, ...] = ("oracle", "transformers", "openai")


def get_describer(
    backend: str,
    task: DescribeTask | str,
    model: str | None = None,
    url: str | None = None,
    seed: int = 0,
    **options: Any,
) -> Describer:
    """Build a backend by name (what the CLI uses).

    Args:
        backend: ``oracle``, ``transformers`` or ``openai``.
        task: the describe task (or its name).
        model: transformers: the local model folder; openai: the served model name.
        url: openai: the API root (e.g. http://127.0.0.1:8000/v1).
        seed: oracle: the phrasing seed.
        options: passed to the backend's constructor (batch_size, max_new_tokens, device, dtype, api_key,
            timeout, max_retries, backoff, concurrency, max_tokens, reveal_class).
    """
    if backend == "oracle":
        return OracleDescriber(task, seed=seed)
    if backend == "transformers":
        if not model:
            raise ValueError("--model: the transformers backend needs a local model folder")
        return TransformersDescriber(model, task, **options)
    if backend == "openai":
        if not url:
            raise ValueError("--url: the openai backend needs the server's API root, e.g. http://127.0.0.1:8000/v1")
        return OpenAIDescriber(url, model or "", task, **options)
    raise ValueError(f"--backend: expected one of {list(BACKENDS)}, got {backend!r}")
