"""On-disk cache of text embeddings: one safetensors file per text encoder, keyed by the text's sha256.

A description bank keeps its cache at ``<bank>/embeddings/<encoder name>.safetensors``. For each text
(key ``sha256(text.encode("utf-8")).hexdigest()``) the file holds three tensors::

    "<key>.tokens"  (L, D) float32   last hidden states, L = the encoder's max_length
    "<key>.mask"    (L,)   bool      True where a real token (not padding) is
    "<key>.pooled"  (D,)   float32   the pooled vector

and the metadata ``{"format", "encoder", "max_length", "dim"}``. A file written by another encoder or
with another ``max_length`` is refused (its vectors would silently be wrong for this one). Saving writes
a temporary file beside the cache and renames it, so a killed run never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import torch

from ..io.atomic import atomic_path

__all__ = ["CACHE_FORMAT", "CACHE_ENV", "CachedEmbedding", "EmbeddingCache", "text_key", "user_cache_dir"]

#: the ``format`` metadata of a cache file; a file of another format is refused
CACHE_FORMAT = "medgen_monai.text.cache/1"
_PARTS = ("tokens", "mask", "pooled")


#: the environment variable that moves the user cache (default ``~/.cache/medgen_monai``)
CACHE_ENV = "MEDGEN_MONAI_CACHE"


def user_cache_dir(*parts: str) -> Path:
    """A folder of the user's cache, ``$MEDGEN_MONAI_CACHE/<parts>`` (default ``~/.cache/medgen_monai/<parts>``),
    where inference keeps what it caches: a bundle folder is never written at run time (it may be installed
    read-only or shared). The folder is created on first write, not here."""
    root = os.environ.get(CACHE_ENV) or str(Path("~") / ".cache" / "medgen_monai")
    return Path(root).expanduser().joinpath(*[str(p) for p in parts])


def text_key(text: str) -> str:
    """The cache key of a text: the sha256 hex digest of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CachedEmbedding(NamedTuple):
    """One text's embedding: ``tokens`` (L, D) float32, ``mask`` (L,) bool, ``pooled`` (D,) float32 (CPU)."""

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor


class EmbeddingCache:
    """A safetensors file of text embeddings for ONE encoder and ``max_length``.

    The file is read when the cache is bound to an encoder (:meth:`bind`, done by
    :class:`~medgen_monai.text.TextEncoder`), new entries are kept in memory and written by :meth:`save`.

    Args:
        path: the ``.safetensors`` file (it need not exist yet; its folder is created on save).

    Example::

        cache = EmbeddingCache("bank/embeddings/all-MiniLM-L6-v2-0123456789-len64.safetensors")
        encoder = TextEncoder(cache=cache)   # binds and loads the file
        encoder.encode(["a small round lesion"])
        cache.save()
    """

    def __init__(self, path: str | os.PathLike) -> None:
        path = Path(path)
        if path.suffix != ".safetensors":
            raise ValueError(f"embedding cache {path}: expected a file name ending in .safetensors")
        if path.exists() and not path.is_file():
            raise ValueError(f"embedding cache {path}: exists and is not a file")
        self.path = path
        self.encoder: str | None = None
        self.max_length: int | None = None
        self.dim: int | None = None
        self._entries: dict[str, CachedEmbedding] = {}
        self._unsaved = 0

    # ---------------------------------------------------------------- binding and reading

    def bind(self, encoder: str, max_length: int, dim: int) -> None:
        """Tie the cache to an encoder and read the file, if there is one.

        Raises:
            ValueError: the file is not a readable safetensors cache, or was written by another encoder,
                ``max_length`` or embedding width; or the cache is already bound to another encoder.
        """
        identity = (str(encoder), int(max_length), int(dim))
        if self.encoder is not None:
            if identity != (self.encoder, self.max_length, self.dim):
                raise ValueError(
                    f"embedding cache {self.path} is bound to encoder {self.encoder!r} (max_length "
                    f"{self.max_length}, dim {self.dim}); give {identity[0]!r} its own cache file"
                )
            return
        self.encoder, self.max_length, self.dim = identity
        if self.path.is_file():
            self._entries = self._read(*identity)
        self._unsaved = 0

    def _read(self, encoder: str, max_length: int, dim: int) -> dict[str, CachedEmbedding]:
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                found = (meta.get("format"), meta.get("encoder"), meta.get("max_length"), meta.get("dim"))
                if found != (CACHE_FORMAT, encoder, str(max_length), str(dim)):
                    raise ValueError(
                        f"embedding cache {self.path} was written by encoder {meta.get('encoder')!r} with max_length "
                        f"{meta.get('max_length')} and dim {meta.get('dim')} (format {meta.get('format')!r}); "
                        "this encoder "
                        f"is {encoder!r} with max_length {max_length} and dim {dim}: delete the file or use the "
                        f"encoder's own cache file ({encoder}.safetensors)"
                    )
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (SafetensorError, OSError) as e:
            raise ValueError(f"embedding cache {self.path}: not a readable safetensors file ({e})") from None
        entries: dict[str, CachedEmbedding] = {}
        for key in {name.rsplit(".", 1)[0] for name in tensors}:
            try:
                entry = CachedEmbedding(*(tensors[f"{key}.{part}"] for part in _PARTS))
            except KeyError as e:
                raise ValueError(
                    f"embedding cache {self.path}: entry {key} lacks {e.args[0]!r}; delete the file"
                ) from None
            if (
                entry.tokens.shape != (max_length, dim)
                or entry.mask.shape != (max_length,)
                or entry.pooled.shape != (dim,)
            ):
                raise ValueError(
                    f"embedding cache {self.path}: entry {key} has shapes {tuple(entry.tokens.shape)}, "
                    f"{tuple(entry.mask.shape)}, {tuple(entry.pooled.shape)}; expected ({max_length}, {dim}), "
                    f"({max_length},), ({dim},): delete the file"
                )
            entries[key] = entry
        return entries

    def _require_bound(self) -> None:
        if self.encoder is None:
            raise RuntimeError(
                f"embedding cache {self.path} is not bound to an encoder: pass it to TextEncoder(cache=...) "
                "or call bind(encoder, max_length, dim)"
            )

    # ---------------------------------------------------------------- access

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> CachedEmbedding | None:
        """The embedding stored under ``key`` (a :func:`text_key`), or None."""
        return self._entries.get(key)

    def put(self, key: str, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor) -> None:
        """Store one text's embedding (``tokens`` (L, D), ``mask`` (L,), ``pooled`` (D,)) in memory."""
        self._require_bound()
        if (
            tokens.shape != (self.max_length, self.dim)
            or mask.shape != (self.max_length,)
            or pooled.shape != (self.dim,)
        ):
            raise ValueError(
                f"embedding cache {self.path}: expected tokens ({self.max_length}, {self.dim}), mask "
                f"({self.max_length},), pooled ({self.dim},); got {tuple(tokens.shape)}, {tuple(mask.shape)}, "
                f"{tuple(pooled.shape)}"
            )
        if key not in self._entries:
            self._unsaved += 1
        self._entries[key] = CachedEmbedding(
            tokens.detach().float().cpu().contiguous(),
            mask.detach().bool().cpu().contiguous(),
            pooled.detach().float().cpu().contiguous(),
        )

    @property
    def unsaved(self) -> int:
        """Entries added since the last :meth:`save` (or load)."""
        return self._unsaved

    # ---------------------------------------------------------------- writing

    def save(self) -> Path:
        """Write every entry to :attr:`path` atomically (temporary file + rename) and return the path.

        Nothing is written when no entry was added since the file was read or last saved.
        """
        from safetensors.torch import save_file

        self._require_bound()
        if self._unsaved == 0 and self.path.is_file():
            return self.path
        tensors = {f"{key}.{part}": value for key, entry in self._entries.items() for part, value in zip(_PARTS, entry)}
        metadata = {
            "format": CACHE_FORMAT,
            "encoder": str(self.encoder),
            "max_length": str(self.max_length),
            "dim": str(self.dim),
        }
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata=metadata)
        self._unsaved = 0
        return self.path

    def __repr__(self) -> str:
        return (
            f"EmbeddingCache({str(self.path)!r}, encoder={self.encoder!r}, entries={len(self)}, "
            f"unsaved={self._unsaved})"
        )
