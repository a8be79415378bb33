"""MONAI Label: the generator bundles served as MONAI Label infer tasks.

MONAI Label's own bundle task (``monailabel.tasks.infer.bundle.BundleInferTask``) is written for segmentation,
detection and classification bundles: it loads ``models/model.pt`` (or ``model.ts``) into ``network_def``, reads the
request's image through the bundle's ``preprocessing``, runs ``inferer(image, network)`` and writes a label mask
through ``postprocessing``, with labels from the first output's ``channel_def``. These bundles take no image and
keep two weight files (``models/autoencoder.pt``, ``models/diffusion.pt``), so it ignores them (``is_valid()`` is
false). A generator's infer request carries a generation request instead, and :class:`GenerationTask` serves it
through the bundle's own inference workflow, as MONAI's workflow API runs any bundle:

1. :func:`request_overrides` maps the request to config overrides (``category``, ``description``, ``report``,
   ``n``, ``seed``, ``num_inference_steps``, ...), checking each field against the bundle's kind;
2. ``monai.bundle.create_workflow(workflow_type="infer", output_dir=<a fresh folder>, **overrides)`` builds the
   workflow, ``check_properties()`` confirms MONAI's inference properties, ``run()`` generates through the
   ``evaluator`` (the bundle's ``GenerationEvaluator``) and its writer;
3. the result is ``(file, json)`` as MONAI Label's infer tasks return it: a copy of the first generated image (MONAI
   Label's REST layer deletes the returned file once sent; the generated file stays in the output folder) and a
   JSON with its sidecar and every output written.

:class:`GenerationTask` has no MONAI Label import. :func:`infer_task` / :func:`infer_tasks` wrap it in
``GenerationInferTask``, a subclass of MONAI Label's ``monailabel.interfaces.tasks.infer_v2.InferTask`` that a
``MONAILabelApp.init_infers()`` returns (``apps/monailabel/main.py``). monailabel is imported only then; when it is
not importable and ``MEDGEN_MONAILABEL_PATH`` names a folder (a ``pip install --no-deps --target`` install), that
folder is appended to ``sys.path`` first. docs/monai.md ("MONAI Label") says how to install it and what it needs.

Request fields by bundle kind (other keys, MONAI Label's own ``model``, ``image``, ``device``, ``label_tag``, ...,
are ignored; ``description`` is not read because MONAI Label overwrites it with the model's description):

* every kind: ``n``, ``seed``, ``num_inference_steps``, ``guidance_scale``, ``eta``, ``device``;
* ``class`` (ldm_label_derm): ``category`` (a class, a comma-separated list or a list; default every class);
* ``description`` (vap_diffusion_*): ``category`` and ``prompt``, the visual-attribute description (default: one
  drawn from the bundle's bank);
* ``report`` (ccella_prostate_mri): ``report`` (the radiology report; default none) and ``spacing`` (mm);
* ``streams`` (medcodim_cxr): ``inputs`` (modality -> image file or text) and ``outputs`` (the streams generated).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLE_KINDS",
    "COMMON_FIELDS",
    "KIND_FIELDS",
    "MONAILABEL_PATH_ENV",
    "GenerationTask",
    "bundle_kind",
    "import_monailabel",
    "infer_task",
    "infer_tasks",
    "request_overrides",
]

MONAILABEL_PATH_ENV = "MEDGEN_MONAILABEL_PATH"

# the conditioner a bundle's inference config builds -> the kind of request it serves
BUNDLE_KINDS = {
    "ClassConditioner": "class",
    "DescriptionConditioner": "description",
    "ReportConditioner": "report",
    "AlignedConditioner": "streams",
}
COMMON_FIELDS = ("n", "seed", "num_inference_steps", "guidance_scale", "eta", "device")
KIND_FIELDS = {
    "class": ("category",),
    "description": ("category", "prompt"),
    "report": ("report", "spacing"),
    "streams": ("inputs", "outputs"),
}
_ALL_FIELDS = sorted({f for fields in KIND_FIELDS.values() for f in fields})
_INSTALL_HINT = (
    "monailabel is not importable: install it beside the project (docs/monai.md, 'MONAI Label') and "
    f"set {MONAILABEL_PATH_ENV} to that folder"
)


def bundle_kind(bundle_root: str | Path) -> str:
    """The kind of request a bundle serves (``class``, ``description``, ``report`` or ``streams``), from the
    conditioner its ``configs/inference.json`` builds.

    Raises:
        ValueError: ``bundle_root`` is not a bundle folder, or its conditioner is none of :data:`BUNDLE_KINDS`.
    """
    config = _read_config(Path(bundle_root))
    target = str((config.get("conditioner") or {}).get("_target_", ""))
    kind = BUNDLE_KINDS.get(target.rsplit(".", 1)[-1])
    if kind is None:
        raise ValueError(f"{bundle_root}: conditioner: expected one of {sorted(BUNDLE_KINDS)}, got {target!r}")
    return kind


def _read_config(root: Path) -> dict[str, Any]:
    path = root / "configs" / "inference.json"
    if not path.is_file():
        raise ValueError(f"bundle_root: {root} is not a bundle folder (no configs/inference.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def _given(value: Any) -> bool:
    """A request field counts as given unless it is ``None`` or blank text (what a client's empty option sends)."""
    return value is not None and not (isinstance(value, str) and not value.strip())


def _integer(request: Mapping[str, Any], field: str, minimum: int) -> int:
    value = request[field]
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: expected an integer >= {minimum}, got {value!r}") from None
    if number < minimum:
        raise ValueError(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return number


def _number(request: Mapping[str, Any], field: str, low: float, high: float = math.inf) -> float:
    value = request[field]
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not low <= number <= high:
        bounds = f">= {low}" if high == math.inf else f"in [{low}, {high}]"
        raise ValueError(f"{field}: expected a number {bounds}, got {value!r}")
    return number


def _device(value: Any) -> Any:
    """MONAI Label's device choice as a ``torch.device``: a name or a list (its first), CUDA falling back to the CPU
    when there is none, as MONAI Label's own tasks do."""
    import torch

    name = value[0] if isinstance(value, (list, tuple)) and value else value
    if not isinstance(name, str):
        raise ValueError(f"device: expected a device name such as 'cpu' or 'cuda:0', got {value!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        name = "cpu"
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: expected a device name such as 'cpu' or 'cuda:0', got {value!r}") from None


def _categories(value: Any, classes: Sequence[str]) -> list[str]:
    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or not all(isinstance(c, str) for c in names):
        raise ValueError(f"category: expected a class name, a comma-separated list or a list of names, got {value!r}")
    chosen = [c.strip() for c in names if c.strip()]
    unknown = [c for c in chosen if c not in classes]
    if unknown or not chosen:
        raise ValueError(f"category: unknown {unknown or value!r}; expected some of {list(classes)}")
    return chosen


def request_overrides(
    request: Mapping[str, Any], kind: str, classes: Sequence[str] = (), max_outputs: int = 16
) -> dict[str, Any]:
    """A MONAI Label infer request -> the bundle's inference config overrides.

    Args:
        request: the infer request: the fields of :data:`COMMON_FIELDS` and of ``KIND_FIELDS[kind]``; other keys
            are ignored (MONAI Label adds its own), ``None`` or blank text counts as not given.
        kind: the bundle's kind (:func:`bundle_kind`).
        classes: the bundle's classes (``class`` and ``description`` kinds).
        max_outputs: the most outputs one request may generate (``n`` per category, or ``n``).

    Returns:
        config id -> value, only for what the request gives, except ``n``: 1 when not given (one image per
        request, where a bundle run makes 4). Free text (``prompt``, ``report``, text ``inputs``) is
        de-identified first (:func:`medgen_monai.text.deid.scrub_text`): MONAI logs its overrides and the text
        goes into every sidecar.

    Raises:
        ValueError: a bad value, or a field the bundle's kind does not take; the message names the field.
    """
    if kind not in KIND_FIELDS:
        raise ValueError(f"kind: expected one of {sorted(KIND_FIELDS)}, got {kind!r}")
    if not isinstance(request, Mapping):
        raise ValueError(f"request: expected a mapping of request fields, got {type(request).__name__}")
    from ..text.deid import scrub_text

    for field in _ALL_FIELDS:
        if field not in KIND_FIELDS[kind] and _given(request.get(field)):
            takes = [k for k, fields in KIND_FIELDS.items() if field in fields]
            raise ValueError(
                f"{field}: only for {' or '.join(takes)}-conditioned bundles; this one is "
                f"{kind}-conditioned and takes {list(COMMON_FIELDS + KIND_FIELDS[kind])}"
            )
    given = {k: v for k, v in request.items() if k in COMMON_FIELDS + KIND_FIELDS[kind] and _given(v)}
    overrides: dict[str, Any] = {"n": _integer(given, "n", 1) if "n" in given else 1}
    if "seed" in given:
        overrides["seed"] = _integer(given, "seed", 0)
    if "num_inference_steps" in given:
        overrides["num_inference_steps"] = _integer(given, "num_inference_steps", 1)
    if "guidance_scale" in given:
        overrides["guidance_scale"] = _number(given, "guidance_scale", 0.0)
    if "eta" in given:
        overrides["eta"] = _number(given, "eta", 0.0, 1.0)
    if "device" in given:
        overrides["device"] = _device(given["device"])
    outputs = overrides["n"]
    if "category" in given:
        overrides["category"] = _categories(given["category"], classes)
    if kind in ("class", "description"):
        outputs *= len(overrides.get("category", classes))
    if "prompt" in given:
        if not isinstance(given["prompt"], str):
            raise ValueError(f"prompt: expected the description text, got {type(given['prompt']).__name__}")
        overrides["description"] = scrub_text(given["prompt"])[0]
    if "report" in given:
        if not isinstance(given["report"], str):
            raise ValueError(f"report: expected the report text, got {type(given['report']).__name__}")
        overrides["report"] = scrub_text(given["report"])[0]
    if "spacing" in given:
        values = given["spacing"].split(",") if isinstance(given["spacing"], str) else given["spacing"]
        try:
            spacing = [float(v) for v in values]
        except (TypeError, ValueError):
            spacing = []
        if len(spacing) != 3 or not all(0 < v < math.inf for v in spacing):
            raise ValueError(f"spacing: expected three positive millimetre values, got {given['spacing']!r}")
        overrides["spacing"] = spacing
    if "inputs" in given:
        if not isinstance(given["inputs"], Mapping) or not all(isinstance(v, str) for v in given["inputs"].values()):
            raise ValueError(f"inputs: expected modality -> image file or text, got {given['inputs']!r}")
        from ..io.writers import is_file_input

        overrides["inputs"] = {str(m): v if is_file_input(v) else scrub_text(v)[0] for m, v in given["inputs"].items()}
    if "outputs" in given:
        streams = given["outputs"].split(",") if isinstance(given["outputs"], str) else given["outputs"]
        if not isinstance(streams, (list, tuple)) or not all(isinstance(s, str) and s.strip() for s in streams):
            raise ValueError(f"outputs: expected stream names (a list or comma-separated), got {given['outputs']!r}")
        overrides["outputs"] = [s.strip() for s in streams]
    if outputs > max_outputs:
        raise ValueError(
            f"n: {overrides['n']} per category makes {outputs} outputs; one request makes at most "
            f"{max_outputs} (ask for fewer, or name a category)"
        )
    return overrides


class GenerationTask:
    """One generator bundle as an infer task: a request in, ``(generated file, result json)`` out.

    Each call builds the bundle's inference workflow with MONAI's ``create_workflow(workflow_type="infer")``,
    overriding ``output_dir`` (a fresh folder per request under ``output_dir/<bundle>``, so an earlier output of
    the same ids is never returned for a request of other settings) and what :func:`request_overrides` maps from
    the request, checks its inference properties and runs it. No MONAI Label import: :func:`infer_task` wraps it.

    Args:
        bundle_root: the bundle folder.
        output_dir: where generated outputs (images, sidecars) are kept, one folder per request.
        max_outputs: the most outputs one request may generate.
        copy_result: return a temporary copy of the generated file (MONAI Label's REST layer deletes the file an
            infer task returns once it has sent it); ``False``: the file in the output folder itself.
    """

    def __init__(
        self, bundle_root: str | Path, output_dir: str | Path, max_outputs: int = 16, copy_result: bool = True
    ) -> None:
        self.root = Path(bundle_root)
        config = _read_config(self.root)
        meta_path = self.root / "configs" / "metadata.json"
        if not meta_path.is_file():
            raise ValueError(f"bundle_root: {self.root} has no configs/metadata.json")
        if int(max_outputs) < 1:
            raise ValueError(f"max_outputs: expected an integer >= 1, got {max_outputs!r}")
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        self.name = str(metadata.get("name") or self.root.name)
        self.version = str(metadata.get("version", ""))
        self.description = str(metadata.get("description", ""))
        self.kind = bundle_kind(self.root)
        self.classes = [str(c) for c in config.get("classes") or []]
        self.dimension = len(config.get("image_size") or (0, 0))
        self.defaults = {
            k: config[k] for k in ("seed", "num_inference_steps", "guidance_scale", "eta", "formats") if k in config
        }
        self.has_progress = "progress" in config
        self.output_dir = Path(output_dir)
        self.max_outputs = int(max_outputs)
        self.copy_result = bool(copy_result)

    def is_valid(self) -> bool:
        """The bundle ships every weights file its inference config loads."""
        from ..engines.bundles import weights_files

        files = weights_files(self.root)
        return bool(files) and all(path.is_file() for path in files)

    def options(self) -> dict[str, Any]:
        """The request fields with their defaults, as MONAI Label shows a task's ``config`` to its clients.
        ``category`` lists the classes: a client shows a choice and sends one; sent back whole, the list asks for
        ``n`` outputs of each class."""
        options: dict[str, Any] = {"n": 1, "seed": self.defaults.get("seed", 0)}
        sampling = ("num_inference_steps", "guidance_scale", "eta")
        options.update({k: v for k, v in self.defaults.items() if k in sampling})
        if self.kind in ("class", "description"):
            options["category"] = list(self.classes)
        if self.kind == "description":
            options["prompt"] = ""
        if self.kind == "report":
            options["report"] = ""
        return options

    def info(self) -> dict[str, Any]:
        """What the task serves: the bundle, its kind, the request fields it takes and their defaults."""
        return {
            "bundle": self.name,
            "version": self.version,
            "kind": self.kind,
            "description": self.description,
            "dimension": self.dimension,
            "classes": list(self.classes),
            "fields": list(COMMON_FIELDS + KIND_FIELDS[self.kind]),
            "options": self.options(),
        }

    def overrides(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """The config overrides of ``request`` (:func:`request_overrides` for this bundle)."""
        return request_overrides(request, self.kind, self.classes, self.max_outputs)

    def _request_dir(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return self.output_dir / self.name / f"{stamp}-{uuid.uuid4().hex[:8]}"

    def generate(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Run the bundle's inference workflow for ``request``.

        Returns:
            ``{"bundle", "version", "kind", "overrides", "output_dir", "file", "sidecar", "outputs", "latencies"}``:
            ``file`` is the first generated file kept in ``output_dir`` (a sidecar's folder), ``sidecar`` its
            sidecar, ``outputs`` every output written (``{"id", "files": {format or stream: path}}``).

        Raises:
            ValueError: a bad request (the message names the field), or one the bundle rejects.
        """
        from monai.bundle import create_workflow

        begin = time.time()
        overrides = self.overrides(request)
        out = self._request_dir()
        if self.has_progress:
            overrides["progress"] = False
        config_dir = self.root / "configs"
        path_entry = str(Path(str(config_dir / "inference.json")).parent.parent)  # as ConfigWorkflow.run adds it
        try:
            workflow = create_workflow(
                config_file=str(config_dir / "inference.json"),
                meta_file=str(config_dir / "metadata.json"),
                workflow_type="infer",
                bundle_root=str(self.root),
                output_dir=str(out),
                **overrides,
            )
            missing = workflow.check_properties()
            if missing:
                raise ValueError(f"{self.name}: the inference workflow lacks MONAI's properties {missing}")
            workflow.run()
            evaluator = workflow.evaluator
            records = list(evaluator.written)
            outputs = [
                {"id": str(r["id"]), "files": {k: str(p) for k, p in evaluator.writer.paths(r).items()}}
                for r in records
            ]
            workflow.finalize()
        except RuntimeError as e:
            # MONAI wraps an error raised while evaluating a config item: hand on the bad-input error underneath
            cause: BaseException | None = e
            while cause is not None and not isinstance(cause, ValueError):
                cause = cause.__cause__
            if cause is None:
                raise
            raise cause from None
        finally:
            # ConfigWorkflow.run puts the bundle folder on sys.path on every call; a server runs many
            if path_entry in sys.path:
                sys.path.remove(path_entry)
        if not outputs:
            raise ValueError(f"{self.name}: the workflow wrote no output into {out}")
        first = outputs[0]["files"]
        generated = next((p for k, p in first.items() if k != "sidecar" and Path(p).is_file()), None)
        sidecar = json.loads(Path(first["sidecar"]).read_text(encoding="utf-8"))
        shown = {k: str(v) if k == "device" else v for k, v in overrides.items()}
        return {
            "bundle": self.name,
            "version": self.version,
            "kind": self.kind,
            "overrides": shown,
            "output_dir": str(out),
            "file": generated,
            "sidecar": sidecar,
            "outputs": outputs,
            "latencies": {"total": round(time.time() - begin, 2)},
        }

    def __call__(self, request: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """``(file, result)`` as MONAI Label's infer tasks return: the generated file (a temporary copy with
        ``copy_result``; ``None`` when the first output has no file, e.g. a folder of DICOM files) and
        :meth:`generate`'s result."""
        result = self.generate(request)
        generated = result["file"]
        if generated is None or not self.copy_result:
            return generated, result
        name = Path(generated).name
        suffix = name[name.index(".") :] if "." in name else ""
        handle, copy = tempfile.mkstemp(prefix=f"{self.name}-", suffix=suffix)
        os.close(handle)
        shutil.copyfile(generated, copy)
        return copy, result


def import_monailabel() -> tuple[type, Any]:
    """MONAI Label's ``InferTask`` and ``InferType``; when monailabel is not importable and
    ``$MEDGEN_MONAILABEL_PATH`` is set, that folder is appended to ``sys.path`` (after the project's own packages,
    which keep precedence) and the import tried again.

    Raises:
        ImportError: monailabel cannot be imported; the message says where the install is described.
    """
    try:
        from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
    except ImportError:
        extra = os.environ.get(MONAILABEL_PATH_ENV, "").strip()
        if not extra or not Path(extra).is_dir():
            where = f" ({MONAILABEL_PATH_ENV}={extra!r} is not a folder)" if extra else ""
            raise ImportError(_INSTALL_HINT + where) from None
        if extra not in sys.path:
            sys.path.append(extra)
        try:
            from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
        except ImportError as e:
            raise ImportError(f"{_INSTALL_HINT} ({MONAILABEL_PATH_ENV}={extra}: {e})") from None
    return InferTask, InferType


@cache
def _infer_task_class() -> type:
    InferTask, InferType = import_monailabel()

    class GenerationInferTask(InferTask):  # type: ignore[misc, valid-type]
        """A generator bundle as a MONAI Label infer task (``InferType.OTHERS``, no labels): MONAI Label's
        ``InferTask`` around :class:`GenerationTask`, whose arguments it takes."""

        def __init__(
            self, bundle_root: str | Path, output_dir: str | Path, max_outputs: int = 16, copy_result: bool = True
        ) -> None:
            self.task = GenerationTask(bundle_root, output_dir, max_outputs=max_outputs, copy_result=copy_result)
            super().__init__(
                type=InferType.OTHERS,
                labels=None,
                dimension=self.task.dimension,
                description=self.task.description,
                config=self.task.options(),
            )

        def is_valid(self) -> bool:
            return self.task.is_valid()

        def info(self) -> dict[str, Any]:
            info = super().info()
            info.update({k: v for k, v in self.task.info().items() if k in ("bundle", "version", "kind", "fields")})
            return info

        def __call__(self, request: Mapping[str, Any]) -> tuple[str | None, dict[str, Any]]:
            return self.task(request)

    GenerationInferTask.__module__ = __name__
    GenerationInferTask.__qualname__ = "GenerationInferTask"
    return GenerationInferTask


def __getattr__(name: str) -> Any:
    # GenerationInferTask subclasses MONAI Label's InferTask: built on first use, so that importing this module
    # never needs monailabel
    if name == "GenerationInferTask":
        return _infer_task_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def infer_task(bundle_root: str | Path, output_dir: str | Path, max_outputs: int = 16, copy_result: bool = True) -> Any:
    """A MONAI Label infer task (``GenerationInferTask``, a ``monailabel`` ``InferTask``) serving one bundle.

    Raises:
        ImportError: monailabel cannot be imported (see :func:`import_monailabel`).
        ValueError: ``bundle_root`` is not a generator bundle.
    """
    return _infer_task_class()(bundle_root, output_dir, max_outputs=max_outputs, copy_result=copy_result)


def infer_tasks(
    bundles_dir: str | Path, output_dir: str | Path, names: Sequence[str] | str | None = None, max_outputs: int = 16
) -> dict[str, Any]:
    """One MONAI Label infer task per bundle under ``bundles_dir`` that ships its weights, by bundle folder name:
    what a ``MONAILabelApp.init_infers()`` returns.

    Args:
        bundles_dir: the folder of bundle folders.
        output_dir: where each task keeps its outputs (``output_dir/<bundle>/<request folder>``).
        names: the bundles to serve (a list or comma-separated; default: every shipped bundle).
        max_outputs: the most outputs one request may generate.

    Raises:
        ValueError: ``bundles_dir`` holds no shipped bundle, or ``names`` one that is not shipped there.
        ImportError: monailabel cannot be imported.
    """
    from ..engines.bundles import shipped_bundles

    shipped = {root.name: root for root in shipped_bundles(bundles_dir)}
    if not shipped:
        raise ValueError(f"bundles_dir: {bundles_dir} holds no bundle with its weights")
    listed = names.split(",") if isinstance(names, str) else names
    wanted = list(shipped) if listed is None else [n.strip() for n in listed if n.strip()]
    unknown = [n for n in wanted if n not in shipped]
    if unknown or not wanted:
        raise ValueError(f"models: unknown {unknown or names!r}; the bundles with weights are {sorted(shipped)}")
    return {name: infer_task(shipped[name], output_dir, max_outputs=max_outputs) for name in wanted}
