"""Dictionary transforms for description conditioning: draw a description from the bank, encode it.

- :class:`RetrieveDescriptiond`: category (+ seed) -> a description drawn from a
  :class:`~medgen_monai.describe.DescriptionBank` (VAP-Diffusion's test-time retrieval); an explicit
  description in the item wins.
- :class:`EncodeTextd`: text -> token states ``(L, D)`` (the U-Net's cross-attention context) and a pooled
  vector ``(D,)`` with a :class:`~medgen_monai.text.TextEncoder`. It is deterministic, so a MONAI
  ``CacheDataset`` caches its output; the encoder's own cache encodes each distinct text once.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable
from monai.utils import ensure_tuple, ensure_tuple_rep

__all__ = ["RetrieveDescriptiond", "EncodeTextd"]


class RetrieveDescriptiond(Randomizable, MapTransform):
    """Give an item a description of its category drawn from a description bank.

    An item that already holds a non-empty description keeps it (an explicit description overrides
    retrieval). Otherwise a record is drawn for ``data[category_key]``: with ``bank.sample(category,
    data[seed_key])`` when the item has a seed, so that the request with seed ``s`` always gets the same
    description; else with a seed from this transform's own random state (:meth:`set_random_state`).
    The drawn record's image id goes to ``data["description_id"]``.

    Args:
        bank: a :class:`~medgen_monai.describe.DescriptionBank`, or its folder (read at the first draw, so
            items with explicit descriptions never need it).
        category_key: the item's category.
        description_key: where the description is read from and written to.
        seed_key: the item's seed (None or missing: use the transform's random state).
        seed: the seed of the transform's random state.

    Raises (on call):
        ValueError: an item without a category, a description that is not a string, or the bank's error for an
            unknown category (naming the known ones) or an empty one.
    """

    def __init__(
        self,
        bank: Any,
        category_key: str = "category",
        description_key: str = "description",
        seed_key: str | None = "seed",
        seed: int = 0,
    ) -> None:
        MapTransform.__init__(self, keys=description_key, allow_missing_keys=True)
        if not isinstance(bank, (str, Path)) and not callable(getattr(bank, "sample", None)):
            raise ValueError(f"bank must be a DescriptionBank or a bank folder, got {type(bank).__name__}")
        self._bank = bank
        self.category_key = category_key
        self.description_key = description_key
        self.seed_key = seed_key
        self.set_random_state(seed=seed)

    @property
    def bank(self) -> Any:
        """The :class:`~medgen_monai.describe.DescriptionBank` (loaded on first use when given as a folder)."""
        if isinstance(self._bank, (str, Path)):
            from ..describe.bank import DescriptionBank

            self._bank = DescriptionBank(self._bank)
        return self._bank

    def randomize(self, data: Any = None) -> int:
        """A draw seed from the transform's random state."""
        return int(self.R.randint(np.iinfo(np.int32).max))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        text = d.get(self.description_key)
        if text is not None and not isinstance(text, str):
            raise ValueError(
                f"item {d.get('id')!r}: {self.description_key!r} must be a string, got {type(text).__name__}"
            )
        if text is not None and text.strip():
            return d
        if d.get(self.category_key) is None:
            raise ValueError(
                f"item {d.get('id')!r}: no {self.category_key!r} to draw a description for and no "
                f"{self.description_key!r} given"
            )
        seed = d.get(self.seed_key) if self.seed_key is not None else None
        record = self.bank.sample(str(d[self.category_key]), seed=self.randomize() if seed is None else int(seed))
        d[self.description_key] = record["description"]
        d["description_id"] = str(record["id"])
        return d


class EncodeTextd(MapTransform):
    """Encode text fields with a :class:`~medgen_monai.text.TextEncoder`.

    For each key, adds the token states ``(L, D)`` float32 under ``tokens_key`` and, unless None, the pooled
    vector ``(D,)`` under ``pooled_key`` and the token mask ``(L,)`` bool under ``mask_key``. Every text has
    exactly ``L = encoder.max_length`` tokens, so items stack into batches.

    Args:
        keys: the text field(s).
        encoder: the text encoder (its caches make each distinct text cost one forward pass).
        tokens_key: output name(s) of the token states, one per key, or None (only the pooled vector is wanted).
        pooled_key: output name(s) of the pooled vectors, one per key, or None.
        mask_key: output name(s) of the masks, one per key, or None (default: not written).
        allow_missing_keys: skip items without a key instead of raising.

    Raises:
        ValueError: output names that do not match the keys one to one; (on call) a text that is not a string.
    """

    def __init__(
        self,
        keys: KeysCollection = "description",
        encoder: Any = None,
        tokens_key: str | Sequence[str] | None = "context",
        pooled_key: str | Sequence[str] | None = "text_pooled",
        mask_key: str | Sequence[str] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if encoder is None or not callable(getattr(encoder, "encode", None)):
            raise ValueError(
                f"encoder must be a TextEncoder (an object with encode(texts)), got {type(encoder).__name__}"
            )
        self.encoder = encoder
        self.tokens_keys = self._names("tokens_key", tokens_key)
        self.pooled_keys = self._names("pooled_key", pooled_key)
        self.mask_keys = self._names("mask_key", mask_key)

    def _names(self, field: str, names: str | Sequence[str] | None) -> tuple[str | None, ...]:
        if names is None:
            return (None,) * len(self.keys)
        names = ensure_tuple(names)
        if len(names) == 1 and len(self.keys) > 1:
            raise ValueError(f"{field}: give one output name per key {list(self.keys)}, got {list(names)}")
        names = ensure_tuple_rep(names, len(self.keys)) if len(names) == 1 else names
        if len(names) != len(self.keys):
            raise ValueError(
                f"{field}: {len(names)} name(s) {list(names)} for {len(self.keys)} key(s) {list(self.keys)}"
            )
        return tuple(str(n) for n in names)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, tokens_key, pooled_key, mask_key in self.key_iterator(
            d, self.tokens_keys, self.pooled_keys, self.mask_keys
        ):
            text = d[key]
            if not isinstance(text, str):
                raise ValueError(f"item {d.get('id')!r}: {key!r} must be a string to encode, got {type(text).__name__}")
            embedding = self.encoder.encode([text])
            if tokens_key is not None:
                d[tokens_key] = embedding.tokens[0]
            if pooled_key is not None:
                d[pooled_key] = embedding.pooled[0]
            if mask_key is not None:
                d[mask_key] = embedding.mask[0]
        return d
