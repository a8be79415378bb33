"""Dictionary transforms for MedCoDi-M's streams: aligned embeddings, multi-prompt conditions, packing.

- :class:`TokenizeReportd`: report text -> the report VAE's token ids (what its ``encode`` takes).
- :class:`AlignedEmbeddingsd`: each modality of a study (a view image, the report's pooled text vector) -> its
  embedding in the aligned condition space (:class:`~medgen_monai.nets.AlignedEncoders`). Deterministic, so a
  ``CacheDataset`` computes it once per study.
- :class:`MultiPromptConditiond`: MedCoDi-M's multi-prompt training: a stream's condition is drawn from the
  other modalities' embeddings (one of them, or their mean), seeded (a resumed run draws the same).
- :class:`PackStreamsd`: several streams' inputs -> one flat vector (what
  :class:`~medgen_monai.nets.StreamAutoencoder` encodes).
- :class:`DecodeReportd`: a generated report's token ids -> text, laid out as a report (:func:`tidy_report`).
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from ..nets.aligned import combine_embeddings

__all__ = [
    "AlignedEmbeddingsd",
    "DecodeReportd",
    "MultiPromptConditiond",
    "PackStreamsd",
    "TokenizeReportd",
    "tidy_report",
]


def _item_id(d: Mapping[Hashable, Any]) -> str:
    return repr(d.get("id"))


class TokenizeReportd(MapTransform):
    """``d[key]`` (report text) -> ``d[output_key]``: the report VAE's token ids ``(max_length,)`` (long).

    Args:
        vae: a :class:`~medgen_monai.nets.ReportVAE` (its tokenizer and ``max_length``).
        key: the report text field.
        output_key: where the ids go.
    """

    def __init__(self, vae: Any, key: str = "text", output_key: str = "report_ids") -> None:
        super().__init__(keys=key)
        if not callable(getattr(vae, "token_ids", None)):
            raise ValueError(f"vae must be a ReportVAE (token_ids(texts)), got {type(vae).__name__}")
        self.vae, self.key, self.output_key = vae, key, output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        text = d.get(self.key, "")
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise ValueError(f"item {_item_id(d)}: {self.key!r} must be report text, got {type(text).__name__}")
        d[self.output_key] = self.vae.token_ids([text])[0]
        return d


class AlignedEmbeddingsd(MapTransform):
    """Each modality's aligned embedding: ``d[inputs[m]]`` -> ``d[f"{m}_embedding"]`` ``(dim,)``.

    Args:
        encoders: the trained :class:`~medgen_monai.nets.AlignedEncoders`.
        inputs: modality -> the item field holding its input (an image ``(C, H, W)`` or a pooled text vector).
    """

    def __init__(self, encoders: Any, inputs: Mapping[str, str]) -> None:
        super().__init__(keys=list(inputs.values()))
        modalities = getattr(encoders, "modalities", None)
        if modalities is None or not callable(getattr(encoders, "embed", None)):
            raise ValueError(f"encoders must be AlignedEncoders (embed, modalities), got {type(encoders).__name__}")
        unknown = sorted(set(inputs) - set(modalities))
        if unknown or not inputs:
            raise ValueError(f"inputs: modalities {unknown} are not among the encoders' {list(modalities)}")
        self.encoders, self.inputs = encoders, dict(inputs)

    @torch.no_grad()
    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        device = next(self.encoders.parameters()).device
        was_training = self.encoders.training
        self.encoders.eval()
        try:
            for modality, key in self.inputs.items():
                if key not in d:
                    raise ValueError(f"item {_item_id(d)}: no {key!r} to embed as {modality!r}")
                x = torch.as_tensor(np.asarray(d[key]), dtype=torch.float32).unsqueeze(0).to(device)
                d[f"{modality}_embedding"] = self.encoders.embed(modality, x)[0].cpu()
        finally:
            self.encoders.train(was_training)
        return d


class MultiPromptConditiond(Randomizable, MapTransform):
    """MedCoDi-M's multi-prompt condition: ``d[output_key]`` ``(1, dim)`` is the normalised mean of the embeddings
    of one option of ``options``, drawn uniformly (the paper: the text, the other view, or both, a third each).

    Args:
        options: each option a list of modalities whose ``f"{m}_embedding"`` fields are combined.
        output_key: where the condition goes.
        seed: seed of the transform's random state (the trainer's batches reseed it per iteration).
    """

    def __init__(self, options: Sequence[Sequence[str]], output_key: str = "condition", seed: int = 0) -> None:
        options = [list(o) for o in options]
        if not options or any(not o or len(set(o)) != len(o) for o in options):
            raise ValueError(f"options must be non-empty lists of distinct modalities, got {options}")
        super().__init__(keys=sorted({f"{m}_embedding" for o in options for m in o}))
        self.options, self.output_key = options, output_key
        self.set_random_state(seed=seed)
        self._choice = 0

    def randomize(self, data: Any = None) -> None:
        self._choice = int(self.R.randint(len(self.options)))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        chosen = self.options[self._choice]
        missing = [m for m in chosen if f"{m}_embedding" not in d]
        if missing:
            raise ValueError(f"item {_item_id(d)}: no embedding of {missing} (run AlignedEmbeddingsd first)")
        embeddings = [torch.as_tensor(d[f"{m}_embedding"]).float().unsqueeze(0) for m in chosen]
        d[self.output_key] = combine_embeddings(embeddings)
        return d


class PackStreamsd(MapTransform):
    """``d[k]`` for ``k`` in ``keys`` (in order) -> one flat float vector ``d[output_key]`` ``(N,)``.

    Token ids travel as floats (exact below 2**24); :class:`~medgen_monai.nets.StreamAutoencoder` unpacks them.
    """

    def __init__(self, keys: Sequence[str], output_key: str = "streams") -> None:
        if not keys:
            raise ValueError("keys: give at least one stream input")
        super().__init__(keys=list(keys))
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        missing = [k for k in self.keys if k not in d]
        if missing:
            raise ValueError(f"item {_item_id(d)}: no {missing} to pack")
        d[self.output_key] = torch.cat([torch.as_tensor(np.asarray(d[k])).float().reshape(-1) for k in self.keys])
        return d


_SECTION = re.compile(r"\b(findings|impression|indication|comparison|technique)\s*:\s*", re.IGNORECASE)
_SENTENCE = re.compile(r"(^|[.!?]\s+|\n\s*)([a-z])")


def tidy_report(text: str) -> str:
    """Lay out a decoded report as the reports are written: section headers in capitals on lines of their own
    (``FINDINGS:``), sentences capitalised. An uncased tokenizer's output (``"findings : the lungs are clear."``)
    becomes ``"FINDINGS:\n\nThe lungs are clear."``; the words are unchanged."""
    text = _SECTION.sub(lambda m: f"\n\n{m.group(1).upper()}:\n\n", text.strip())
    text = re.sub(r"[ \t]+\n", "\n", re.sub(r"\n{3,}", "\n\n", text)).strip()
    return _SENTENCE.sub(lambda m: m.group(1) + m.group(2).upper(), text)


class DecodeReportd(MapTransform):
    """``d[key]``: a batch of generated report token ids ``(B, L)`` -> a list of ``B`` report texts.

    Args:
        vae: the :class:`~medgen_monai.nets.ReportVAE` that generated them (its ``texts``).
        keys: the report stream(s).
        tidy: lay the text out as a report (:func:`tidy_report`).
        allow_missing_keys: leave batches without the report stream alone (a task that generates only views).
    """

    def __init__(self, vae: Any, keys: Any = "report", tidy: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if not callable(getattr(vae, "texts", None)):
            raise ValueError(f"vae must be a ReportVAE (texts(ids)), got {type(vae).__name__}")
        self.vae, self.tidy = vae, bool(tidy)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            ids = torch.as_tensor(d[key])
            if ids.ndim != 2 or ids.is_floating_point():
                raise ValueError(f"{key!r}: expected token ids (B, L), got {tuple(ids.shape)} {ids.dtype}")
            texts = self.vae.texts(ids)
            d[key] = [tidy_report(t) for t in texts] if self.tidy else texts
        return d
