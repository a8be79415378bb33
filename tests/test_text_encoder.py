"""Text encoders: the shipped all-MiniLM-L6-v2, tiny BERT / CLIP / T5 encoders loaded by path, the embedding cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from medgen_monai.text import EmbeddingCache, TextEncoder, default_encoder_path, text_key

WORDS = "a the small large round oval red brown lesion polyp heart enlarged with border irregular".split()


def _count_rows(encoder: TextEncoder) -> list[int]:
    """Rows of every forward pass of the encoder's model."""
    rows: list[int] = []
    encoder.model.register_forward_hook(
        lambda module, args, kwargs, out: rows.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    return rows


def _word_tokenizer(eos_only: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    template = "$A </s>" if eos_only else "<s> $A </s>"  # T5 ends with eos only; CLIP wraps in bos/eos
    tokenizer.post_processor = processors.TemplateProcessing(single=template, special_tokens=[("<s>", 2), ("</s>", 3)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    ), len(vocab)


def _tiny(kind: str, root):
    """Save a tiny random encoder of ``kind`` with a tokenizer to ``root / kind``; return (path, expected model
    class)."""
    import transformers

    path = root / kind
    torch.manual_seed(0)
    if kind == "bert":
        path.mkdir()
        for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(default_encoder_path() / name, path / name)  # MiniLM's WordPiece tokenizer, a random tiny BERT
        model = transformers.BertModel(
            transformers.BertConfig(
                vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
            )
        )
        expected = "BertModel"
    else:
        tokenizer, vocab_size = _word_tokenizer(eos_only=kind == "t5")
        tokenizer.save_pretrained(path)
        text = dict(
            vocab_size=vocab_size,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=32,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
        if kind == "clip_text":
            model, expected = transformers.CLIPTextModel(transformers.CLIPTextConfig(**text)), "CLIPTextModel"
        elif kind == "clip":  # a full CLIP checkpoint: only its text tower is loaded
            config = transformers.CLIPConfig(
                text_config=text,
                vision_config=dict(
                    hidden_size=16,
                    intermediate_size=32,
                    num_hidden_layers=1,
                    num_attention_heads=2,
                    image_size=8,
                    patch_size=4,
                ),
                projection_dim=8,
            )
            model, expected = transformers.CLIPModel(config), "CLIPTextModel"
        else:
            model = transformers.T5Model(
                transformers.T5Config(
                    vocab_size=vocab_size,
                    d_model=16,
                    d_kv=8,
                    d_ff=32,
                    num_layers=1,
                    num_heads=2,
                    pad_token_id=0,
                    eos_token_id=3,
                    decoder_start_token_id=0,
                )
            )
            expected = "T5EncoderModel"
    model.save_pretrained(path)
    return path, expected


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder(max_length=32)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("encoders")
    return {kind: _tiny(kind, root) for kind in ("bert", "clip_text", "clip", "t5")}


def test_default_minilm_shapes_and_pooling(minilm):
    texts = ["A small round light brown lesion.", "", "lesion " * 80]
    out = minilm.encode(texts)
    assert minilm.dim == 384 and minilm.max_length == 32 and minilm.model_type == "bert"
    assert out.tokens.shape == (3, 32, 384) and out.tokens.dtype == torch.float32
    assert out.mask.shape == (3, 32) and out.mask.dtype == torch.bool
    assert out.mask.sum(1).tolist()[1] == 2 and out.mask[2].all()  # "" is [CLS] [SEP]; the long text fills L
    assert out.pooled.shape == (3, 384)
    assert torch.allclose(out.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)
    expected = (out.tokens[0] * out.mask[0, :, None]).sum(0) / out.mask[0].sum()
    assert torch.allclose(out.pooled[0], F.normalize(expected, dim=0), atol=1e-5)
    assert minilm.truncated >= 1
    assert minilm.name.startswith("all-MiniLM-L6-v2-") and minilm.name.endswith("-len32")


def test_default_minilm_is_deterministic_and_semantic(minilm):
    texts = ["a small round brown mole", "a tiny round brown mole", "a large pedunculated polyp in the sigmoid colon"]
    fresh = TextEncoder(max_length=32, batch_size=1)  # another instance, another batching
    a, b = minilm.encode(texts), fresh.encode(list(reversed(texts)))
    assert torch.allclose(a.tokens, b.tokens.flip(0), atol=1e-5)
    similar, unrelated = (a.pooled[0] @ a.pooled[1]).item(), (a.pooled[0] @ a.pooled[2]).item()
    assert similar > unrelated + 0.2


def test_each_distinct_text_is_encoded_once():
    encoder = TextEncoder(max_length=16, batch_size=2)
    rows = _count_rows(encoder)
    first = encoder.encode(["red lesion", "blue lesion", "red lesion", "", "green polyp"])
    assert sum(rows) == 4 and encoder.encoded == 4  # batches of 2: 2 + 2
    second = encoder.encode(["green polyp", "red lesion", "a new text"])
    assert sum(rows) == 5 and rows[-1] == 1
    assert torch.equal(second.tokens[1], first.tokens[0]) and torch.equal(first.tokens[0], first.tokens[2])
    assert encoder.encode([]).tokens.shape == (0, 16, 384)


@pytest.mark.parametrize("kind", ["bert", "clip_text", "clip", "t5"])
def test_tiny_encoders_load_by_path(tiny_models, kind):
    path, expected = tiny_models[kind]
    encoder = TextEncoder(path, max_length=8, batch_size=3)
    assert type(encoder.model).__name__ == expected and encoder.dim == 16
    assert encoder.name.startswith(f"{kind}-") and encoder.name.endswith("-len8")
    out = encoder.encode(["a small red lesion", "", "the heart enlarged with irregular border round oval polyp lesion"])
    assert out.tokens.shape == (3, 8, 16) and out.mask.shape == (3, 8) and out.pooled.shape == (3, 16)
    assert out.mask[0].sum() >= 4 and out.mask[1].sum() >= 1 and encoder.truncated == 1
    assert torch.isfinite(out.tokens).all() and torch.allclose(out.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_clip_checkpoint_loads_its_trained_text_tower(tiny_models):
    import transformers

    path, _ = tiny_models["clip"]
    encoder = TextEncoder(path, max_length=8)
    reference = transformers.CLIPModel.from_pretrained(path, local_files_only=True).text_model.eval()
    inputs = encoder.tokenizer(["a red lesion"], padding="max_length", max_length=8, return_tensors="pt")
    with torch.no_grad():
        expected = reference(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).last_hidden_state
    assert torch.allclose(encoder.encode(["a red lesion"]).tokens, expected, atol=1e-5)


def test_cache_file_round_trip(tiny_models, tmp_path):
    path, _ = tiny_models["bert"]
    texts = ["a red lesion", "", "a large polyp"]
    encoder = TextEncoder(path, max_length=8, cache=tmp_path / "bank")  # a folder: the bank's embeddings/<name> file
    first = encoder.encode(texts)
    saved = encoder.save_cache()
    assert saved == tmp_path / "bank" / "embeddings" / f"{encoder.name}.safetensors"
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]  # no temporary file left behind

    from safetensors import safe_open

    with safe_open(str(saved), framework="pt") as f:
        assert (
            f.metadata()["encoder"] == encoder.name
            and f.metadata()["max_length"] == "8"
            and f.metadata()["dim"] == "16"
        )
        assert f.get_tensor(f"{text_key('a red lesion')}.tokens").shape == (8, 16)
        assert len(list(f.keys())) == 9

    again = TextEncoder(path, max_length=8, cache=EmbeddingCache(saved))
    rows = _count_rows(again)
    second = again.encode(list(reversed(texts)))
    assert rows == [] and again.encoded == 0  # every text came from the file
    assert torch.equal(second.tokens.flip(0), first.tokens) and torch.equal(second.mask.flip(0), first.mask)
    again.encode(["something new"])
    assert rows == [1] and again.cache.unsaved == 1
    assert again.save_cache() == saved and again.cache.unsaved == 0


def test_cache_saves_every_n_new_texts(tiny_models, tmp_path):
    path, _ = tiny_models["t5"]
    file = tmp_path / "cache.safetensors"
    encoder = TextEncoder(path, max_length=8, cache=file, save_every=3)
    encoder.encode(["a", "the"])
    assert not file.exists()
    encoder.encode(["red", "a"])
    assert file.is_file() and encoder.cache.unsaved == 0


@pytest.mark.parametrize("other", [("t5", 8), ("bert", 6)])
def test_foreign_cache_is_refused(tiny_models, tmp_path, other):
    file = tmp_path / "cache.safetensors"
    writer = TextEncoder(tiny_models["bert"][0], max_length=8, cache=file)
    writer.encode(["a red lesion"])
    writer.save_cache()
    kind, max_length = other
    with pytest.raises(ValueError, match=r"was written by encoder 'bert-.*-len8' with max_length 8 and dim 16"):
        TextEncoder(tiny_models[kind][0], max_length=max_length, cache=file)


def test_corrupt_cache_is_refused(tiny_models, tmp_path):
    file = tmp_path / "cache.safetensors"
    file.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        TextEncoder(tiny_models["bert"][0], max_length=8, cache=file)
    with pytest.raises(ValueError, match="ending in .safetensors"):
        EmbeddingCache(tmp_path / "cache.bin")


def test_bad_paths_and_arguments_are_refused(tiny_models, tmp_path):
    with pytest.raises(ValueError, match=f"text encoder path {tmp_path / 'missing'} does not exist"):
        TextEncoder(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no Hugging Face model"):
        TextEncoder(tmp_path / "empty")
    broken = tmp_path / "no_weights"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    with pytest.raises(ValueError, match=f"text encoder path {broken}: cannot load"):
        TextEncoder(broken)
    with pytest.raises(ValueError, match="max_length must be >= 2"):
        TextEncoder(tiny_models["bert"][0], max_length=1)
    with pytest.raises(ValueError, match="exceeds what .* can encode"):
        TextEncoder(tiny_models["clip_text"][0], max_length=64)  # 32 positions
    encoder = TextEncoder(tiny_models["bert"][0], max_length=8)
    with pytest.raises(TypeError, match="wrap a single text in a list"):
        encoder.encode("a red lesion")
    with pytest.raises(TypeError, match=r"texts\[1\] is NoneType"):
        encoder.encode(["a", None])


def test_encoder_pickles_for_dataloader_workers(tiny_models):
    import pickle

    encoder = TextEncoder(tiny_models["bert"][0], max_length=8)
    expected = encoder.encode(["a red lesion"]).tokens
    clone = pickle.loads(pickle.dumps(encoder))
    assert torch.equal(clone.encode(["a red lesion"]).tokens, expected)
