"""What a multi-stream bundle (MedCoDi-M) needs around the engine: requests naming inputs and outputs, the
multi-prompt options of a stream, and loading every stream's weights into one
:class:`~medgen_monai.nets.JointDiffusion`.

A request is ``{"id", "seed", "inputs": {modality: input}, "outputs": [stream, ...]}``: the inputs condition (a view
image's file path: PNG, JPEG or DICOM; the report's text), the outputs are generated together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..io.weights import file_sha256, load_weights
from ..io.writers import is_file_input

__all__ = [
    "dataset_stream_requests",
    "input_key",
    "load_stream_models",
    "prompt_options",
    "stream_requests",
    "stream_weight_files",
]


def _check_task(inputs: Sequence[str], outputs: Sequence[str], streams: Sequence[str] | None) -> None:
    if not outputs or isinstance(outputs, str) or len(set(outputs)) != len(outputs):
        raise ValueError(f"outputs: name one or more distinct streams to generate, got {outputs!r}")
    overlap = sorted(set(inputs) & set(outputs))
    if overlap:
        raise ValueError(f"{overlap} cannot be both an input and an output")
    if streams is not None:
        unknown = sorted((set(inputs) | set(outputs)) - set(streams))
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; this bundle has {list(streams)}")


def stream_requests(
    n: int,
    seed: int = 0,
    inputs: Mapping[str, Any] | None = None,
    outputs: Sequence[str] | str = ("frontal", "lateral", "report"),
    streams: Sequence[str] | None = None,
    root: str | Path | None = None,
) -> list[dict[str, Any]]:
    """``n`` requests with seeds ``seed .. seed + n - 1``, each generating ``outputs`` from the same ``inputs``.

    Args:
        n: how many (different seeds).
        seed: the first seed.
        inputs: modality -> input: an image file (a view) or text (a report); ``None``/empty: unconditional.
        outputs: the generated streams (a comma-separated string is accepted, as a command line gives it).
        streams: the bundle's modalities, to reject unknown names.
        root: the folder relative input files are read from (the bundle's ``dataset_dir``); ``None``: the
            working directory.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    from ..text.deid import scrub_text

    outputs = [o.strip() for o in outputs.split(",")] if isinstance(outputs, str) else list(outputs)
    if root is not None:
        inputs = {m: _under(root, v) for m, v in dict(inputs or {}).items()}
    # free text reaches the sidecars: de-identified first (as pacs-run does with a study's report)
    inputs = {
        m: scrub_text(v)[0] if isinstance(v, str) and not is_file_input(v) else v for m, v in dict(inputs or {}).items()
    }
    _check_task(list(inputs), outputs, streams)
    key = input_key(inputs)
    return [
        {"id": f"{'_'.join(outputs)}_{key}_{seed + i:05d}", "seed": seed + i, "inputs": inputs, "outputs": outputs}
        for i in range(n)
    ]


def _under(root: str | Path, value: Any) -> Any:
    """``value`` as a path under ``root`` when it names a file there; anything else unchanged."""
    if isinstance(value, (str, Path)) and not Path(str(value)).is_absolute() and is_file_input(Path(root) / str(value)):
        return str(Path(root) / str(value))
    return value


def input_key(inputs: Mapping[str, Any]) -> str:
    """A short key of what conditions a request (``uncond`` for nothing): the request ids of different inputs differ,
    so a rerun into the same folder never takes outputs of other inputs for done ones. Files count by content."""
    import hashlib

    if not inputs:
        return "uncond"
    parts = []
    for modality in sorted(inputs):
        value = inputs[modality]
        digest = file_sha256(value) if is_file_input(value) else str(value)
        parts.append(f"{modality}={digest}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:8]


def dataset_stream_requests(
    records: Sequence[Mapping[str, Any]],
    n: int,
    seed: int,
    inputs: Sequence[str],
    outputs: Sequence[str],
    fields: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Requests whose inputs are real studies' (evaluation: the generated outputs are compared with the study's).

    Args:
        records: datalist records (:func:`medgen_monai.data.read_dataset`), in a fixed order.
        n: how many (the first ``n`` records; fewer when there are fewer).
        seed: the first seed.
        inputs: the conditioning modalities.
        outputs: the generated streams.
        fields: modality -> record field (default ``{"frontal": "frontal", "lateral": "lateral", "report": "text"}``).

    Each request also carries the study's ``study_id``, ``attributes`` and ``label`` for scoring.
    """
    fields = {"frontal": "frontal", "lateral": "lateral", "report": "text", **dict(fields or {})}
    _check_task(inputs, outputs, None)
    requests = []
    for i, record in enumerate(list(records)[:n]):
        missing = [m for m in inputs if record.get(fields.get(m, m)) is None]
        if missing:
            raise ValueError(f"record {record.get('id')!r} has no {missing} to condition on")
        requests.append(
            {
                "id": f"{'_'.join(outputs)}_{record['id']}",
                "seed": seed + i,
                "inputs": {m: record[fields.get(m, m)] for m in inputs},
                "outputs": list(outputs),
                "study_id": record["id"],
                "attributes": record.get("attributes"),
                "label": record.get("label"),
            }
        )
    return requests


def prompt_options(stream: str, modalities: Sequence[str]) -> list[list[str]]:
    """MedCoDi-M's multi-prompt options of ``stream``: each other modality alone, then all of them together (for
    the frontal view of {frontal, lateral, report}: the lateral view, the report, or both)."""
    others = [m for m in modalities if m != stream]
    if stream not in modalities or not others:
        raise ValueError(f"stream {stream!r} must be one of {list(modalities)}, with at least one other modality")
    return [[m] for m in others] + ([others] if len(others) > 1 else [])


def load_stream_models(
    network: nn.Module,
    model_dir: str | Path,
    bundle: str,
    streams: Sequence[str] | None = None,
    load_coupling: bool = True,
) -> dict[str, dict[str, Any]]:
    """Load ``<model_dir>/<stream>.pt`` into ``network.streams[stream]`` for each stream and
    ``<model_dir>/joint.pt`` into ``network.coupling`` when it exists (without it, jointly generated streams do
    not see each other: the zero-initialised connectors are the identity). ``load_coupling=False`` leaves the
    connectors as built (the joint stage trains them from their zero initialisation). Returns each stream file's
    ``extra`` (its latent normalisation)."""
    model_dir = Path(model_dir)
    extras = {}
    for name in streams or list(network.streams):
        extras[name] = load_weights(
            model_dir / f"{name}.pt", network.streams[name], bundle=bundle, role=f"{name} stream"
        )
    if load_coupling and (model_dir / "joint.pt").is_file():
        extras["joint"] = load_weights(model_dir / "joint.pt", network.coupling, bundle=bundle, role="joint")
    elif load_coupling:  # untrained connectors are the identity; say so in the network rather than pretend to couple
        network.connect = False
    return extras


def stream_weight_files(model_dir: str | Path) -> list[Path]:
    """The weights files of a multi-stream bundle's ``models/`` (for the sidecars' checksums), sorted."""
    return sorted(Path(model_dir).glob("*.pt"))
