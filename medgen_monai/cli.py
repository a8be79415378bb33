"""The ``medgen-monai`` command line (one ``fire`` entry point; also ``python -m medgen_monai``).

Commands::

    medgen-monai phantoms --kind {derm,colon,cxr,prostate} --n N --out DIR [--seed S] [--size ...]
    medgen-monai vocabulary --kind K
    medgen-monai gallery --out FILE.png [--n 4] [--seed 0]
    medgen-monai demo --out DIR      (phantom gallery + the baseline bundle's grid)
    medgen-monai train-audit --kind {all,derm,colon,cxr,prostate} [--out DIR] [--quick]
    medgen-monai generate --bundle bundles/NAME [--category C] [--description TEXT] --n N --out DIR
                          [--format png,nifti,dicom] [--seed S] [--steps K]
                          [--report TEXT | --report_file FILE] [--spacing sx,sy,sz]   (report-conditioned bundles)
    medgen-monai train --bundle bundles/NAME --stage {autoencoder,diffusion} [--dataset_dir DIR] [--max_iterations N]
                       [--multi_gpu]
                       [--train_root DIR (default train/NAME)] [--model_dir DIR (earlier stages; default the bundle's)]
                       (--multi_gpu: under
                        `python -m torch.distributed.run --nproc_per_node N -m medgen_monai train ...`)
    medgen-monai evaluate --bundle bundles/NAME --out DIR [--dataset_dir DIR] [--n 32]
    medgen-monai describe --images DIR_OR_DATALIST --task {derm,colon,cxr} --backend {oracle,transformers,openai}
                          --out BANK_DIR
                          [--layout {isic,kvasir,mimic_cxr}] [--model PATH_OR_NAME] [--url URL] [--batch_size B]
                          [--limit N] [--seed S]
    medgen-monai bank-stats --bank BANK_DIR [--plot FILE.png]
    medgen-monai pacs-run --bundle bundles/NAME --pacs URL --study UID --out DIR [--n N] [--category C] [--seed S]
                          [--steps K] [--description TEXT]
                          (URL: dicom://AET@host:port or http(s)://host:port/dicom-web)
    medgen-monai pacs-echo --pacs URL
    medgen-monai pacs-store --pacs URL --path FILE_OR_DIR    (every .dcm file, a folder's recursively)
    medgen-monai export --bundle bundles/NAME --out DIR [--noencoder] [--untrained] [--batch_size 2] [--noverify]
                          (torch.export programs of the bundle's inference networks, checked against them)
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "phantoms",
    "vocabulary",
    "gallery",
    "demo",
    "train_audit",
    "generate",
    "train",
    "evaluate",
    "describe",
    "bank_stats",
    "pacs_run",
    "pacs_echo",
    "pacs_store",
    "export",
    "main",
]

# Nothing is downloaded at run time: the defaults work offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _size(size: int | str | Sequence[int] | None) -> tuple[int, ...] | int | None:
    """``--size 128``, ``--size 128,128`` or ``--size [128,128,64]`` -> int or tuple."""
    if size is None or isinstance(size, int):
        return size
    if isinstance(size, str):
        parts = [p for p in size.strip("[]() ").replace("x", ",").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--size: expected integers like 64 or 64,64,32, got {size!r}") from None
    return tuple(int(s) for s in size)


def phantoms(
    kind: str, n: int, out: str, seed: int = 0, size: int | str | Sequence[int] | None = None, progress: bool = True
) -> str:
    """Write ``n`` phantom cases of ``kind`` under ``out`` in the real dataset's layout.

    Args:
        kind: derm (ISIC 2019 layout), colon (Kvasir), cxr (MIMIC-CXR-JPG), prostate (PI-CAI).
        n: number of cases.
        out: output folder (created).
        seed: dataset seed; the same seed and arguments give byte-identical files.
        size: spatial size, e.g. 128 or 128,128 (2D) or 128,128,64 (3D); default 64x64 / 64x64x32.
        progress: show a progress bar.
    """
    from tqdm import tqdm

    from .data import write_dataset
    from .phantoms import get_phantom

    phantom = get_phantom(kind)
    if int(n) < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    samples = phantom.generate_many(int(n), seed=int(seed), size=_size(size))
    samples = tqdm(
        samples, total=int(n), desc=f"{kind} phantoms -> {phantom.layout}", disable=not progress, unit="case"
    )
    return str(write_dataset(phantom.layout, samples, out))


def vocabulary(kind: str) -> str:
    """Print the fixed attribute vocabulary of a phantom kind as JSON."""
    from .phantoms import get_phantom

    return json.dumps(get_phantom(kind).vocabulary(), indent=2)


def gallery(out: str, n: int = 4, seed: int = 0, kinds: str | Sequence[str] = "derm,colon,cxr,prostate") -> str:
    """Save a gallery PNG with ``n`` cases of every kind."""
    from .phantoms import get_phantom
    from .phantoms.gallery import save_gallery

    names = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    samples = {k: list(get_phantom(k).generate_many(int(n), seed=int(seed))) for k in names}
    return str(save_gallery(samples, out))


def demo(out: str = "out/demo", steps: int | None = None) -> str:
    """What ``make demo`` runs: a gallery of every phantom kind; the baseline bundle (``bundles/ldm_label_derm``)
    and the three VAP-Diffusion bundles (``bundles/vap_diffusion_{derm,colon,cxr}``, descriptions drawn from their
    banks, recorded in the sidecars) generating two images per class with their shipped weights at their shipped
    sampler settings (``steps`` overrides the step count), each into ``<out>/<bundle>/grid.png``."""
    Path(out).mkdir(parents=True, exist_ok=True)
    gallery(str(Path(out) / "gallery.png"))
    bundles = Path(__file__).resolve().parents[1] / "bundles"
    names = ["ldm_label_derm", "vap_diffusion_derm", "vap_diffusion_colon", "vap_diffusion_cxr"]
    missing = [n for n in names if not (bundles / n / "configs" / "inference.json").is_file()]
    if missing:
        raise ValueError(f"{bundles}: bundles {missing} are missing (run the demo from a clone of the repository)")
    for name in names:
        generate(str(bundles / name), str(Path(out) / name), n=2, steps=steps)
    return ", ".join(str(Path(out) / name / "grid.png") for name in names)


def train_audit(kind: str = "all", out: str | None = None, quick: bool = False) -> str:
    """Train the audit network(s) of ``kind`` (or all) on fresh phantoms and write weights + held-out accuracy.

    Args:
        kind: all, derm, colon, cxr or prostate.
        out: weights folder; default the package's shipped ``medgen_monai/metrics/weights``.
        quick: a tiny budget for smoke tests (accuracy not meaningful).
    """
    from .metrics.audit import train_audit_cli

    return str(train_audit_cli(kind=kind, out_dir=out, quick=quick))


def _bundle_root(bundle: str) -> Path:
    root = Path(bundle)
    if not (root / "configs" / "inference.json").is_file():
        raise ValueError(f"--bundle: {root} is not a bundle folder (no configs/inference.json)")
    return root


def _run_bundle(root: Path, config_files: Sequence[str], **overrides: object) -> None:
    """Run bundle configs exactly as ``python -m monai.bundle run`` does."""
    from monai.bundle import run as run_bundle

    files = [str(root / "configs" / name) for name in config_files]
    logging_file = root / "configs" / "logging.conf"
    try:
        run_bundle(
            config_file=files,
            meta_file=str(root / "configs" / "metadata.json"),
            bundle_root=str(root),
            logging_file=str(logging_file) if logging_file.is_file() else None,
            **{k: v for k, v in overrides.items() if v is not None},
        )
    except RuntimeError as e:
        # MONAI wraps an error raised while evaluating a config item ("Failed to evaluate ..."); hand the
        # user the bad-input error underneath (an unknown category, a weights file of another bundle)
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _description_options(
    root: Path, bank: str | None = None, description: str | None = None, projection: float | None = None
) -> dict[str, object]:
    """Overrides that only description-conditioned bundles (those with a ``bank/``) accept."""
    given = {"--bank": bank, "--description": description, "--projection": projection}
    if any(v is not None for v in given.values()) and not (root / "bank").is_dir():
        names = ", ".join(k for k, v in given.items() if v is not None)
        raise ValueError(
            f"{names}: only for description-conditioned bundles (vap_diffusion_*, with a bank/ folder); {root} has none"
        )
    if bank is not None and not Path(bank).is_dir():
        raise ValueError(f"--bank {bank}: not a description bank folder (make one with medgen-monai describe)")
    return {"bank_dir": None if bank is None else str(bank), "description": description, "projection_alpha": projection}


def _is_report_bundle(root: Path) -> bool:
    """A report-conditioned bundle (CCELLA): its inference config takes ``report`` and ``spacing``."""
    config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    return "report" in config and "spacing" in config


def _report_options(
    root: Path,
    report: str | None = None,
    report_file: str | None = None,
    spacing: str | Sequence[float] | None = None,
    category: str | None = None,
) -> dict[str, object]:
    """Overrides that only report-conditioned bundles accept: the report (text or a UTF-8 file, de-identified before
    MONAI logs its arguments) and the voxel spacing (``"sx,sy,sz"`` mm)."""
    given = {"--report": report, "--report_file": report_file, "--spacing": spacing}
    if not _is_report_bundle(root):
        if any(v is not None for v in given.values()):
            names = ", ".join(k for k, v in given.items() if v is not None)
            raise ValueError(f"{names}: only for report-conditioned bundles (ccella_prostate_mri); {root} is not one")
        return {}
    if category is not None:
        raise ValueError(f"--category: {root.name} reads the class from the report; give --report (or nothing)")
    if report is not None and report_file is not None:
        raise ValueError("--report and --report_file: give one")
    if report_file is not None:
        path = Path(report_file)
        try:
            report = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--report_file {path}: a readable UTF-8 text file ({type(e).__name__}: {e})") from None
    options: dict[str, object] = {}
    if report is not None:
        from .text.deid import scrub_text

        options["report"] = scrub_text(str(report))[0]
    if spacing is not None:
        values = [v for v in (spacing.split(",") if isinstance(spacing, str) else spacing)]
        try:
            numbers = [float(v) for v in values]
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != 3 or not all(v > 0 for v in numbers):
            raise ValueError(f"--spacing: three positive millimetre values 'sx,sy,sz', got {spacing!r}")
        options["spacing"] = numbers
    return options


def generate(
    bundle: str,
    out: str,
    n: int = 4,
    category: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    format: str | None = None,
    batch_size: int | None = None,
    description: str | None = None,
    projection: float | None = None,
    bank: str | None = None,
    progress: bool = True,
    eta: float | None = None,
    report: str | None = None,
    report_file: str | None = None,
    spacing: str | None = None,
) -> str:
    """Generate with a bundle through its ``configs/inference.json`` (the same path as ``python -m monai.bundle run``).

    Args:
        bundle: the bundle folder, e.g. bundles/ldm_label_derm.
        out: output folder; a rerun into the same folder makes only what is missing.
        n: samples per category.
        category: one class or a comma-separated list; default every class.
        seed: first seed (sample i of a category uses seed + i).
        steps: sampling steps (default: the bundle's).
        guidance: classifier-free guidance scale (default: the bundle's).
        format: png, nifti and/or dicom, comma-separated (default: the bundle's; png for 2D, nifti for 3D).
        batch_size: samples per sampler call.
        description: description-conditioned bundles (vap_diffusion_*): use this description for every
            sample instead of drawing one from the bundle's description bank.
        projection: description-conditioned bundles: pull each description toward its nearest training
            descriptions with this weight in [0, 1] (0: off).
        bank: description-conditioned bundles: draw descriptions from this bank instead of the bundle's.
        progress: show a progress bar.
        eta: DDIM stochasticity, 0 (deterministic) to 1 (default: the bundle's; docs/quality.md compares them);
            DDIM bundles only: a rectified-flow bundle's Euler steps are deterministic and refuse an eta above 0.
        report: report-conditioned bundles (ccella_prostate_mri): the radiology report for every sample
            (default: none, the empty report).
        report_file: the same, read from a UTF-8 text file.
        spacing: report-conditioned bundles: the voxel spacing in mm, ``"sx,sy,sz"`` (default: the bundle's).
    """
    root = _bundle_root(bundle)
    report_options = _report_options(root, report, report_file, spacing, category)
    if int(n) < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if eta is not None and not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"--eta must be in [0, 1] (0: deterministic DDIM, 1: DDPM-like; DDIM bundles only), got {eta}")
    if description is not None:  # de-identified before anything (MONAI's run logs its arguments) sees it
        from .text.deid import scrub_text

        description = scrub_text(str(description))[0]
    options = _description_options(root, bank, description, projection)
    _run_bundle(
        root,
        ["inference.json"],
        output_dir=str(out),
        n=int(n),
        category=category,
        seed=int(seed),
        num_inference_steps=steps,
        guidance_scale=guidance,
        formats=format,
        batch_size=batch_size,
        progress=bool(progress),
        eta=None if eta is None else float(eta),
        **options,
        **report_options,
    )
    return str(out)


def train(
    bundle: str,
    stage: str,
    dataset_dir: str | None = None,
    max_iterations: int | None = None,
    train_dir: str | None = None,
    bank: str | None = None,
    progress: bool = True,
    stream: str | None = None,
    multi_gpu: bool = False,
    train_root: str | None = None,
    model_dir: str | None = None,
) -> str:
    """Train one stage of a bundle with its configs: ``inference.json`` + ``train_common.json`` + ``train_<stage>.json``
    (+ ``multi_gpu_train.json`` with ``multi_gpu``).

    Nothing is written into the bundle folder: checkpoints, sample grids and TensorBoard logs go to
    ``<train_root>/<stage>`` and the final weights to ``<train_root>/models/<stage>.pt``; interrupted runs continue
    from ``<train_dir>/checkpoints/last.pt``. A later stage reads the earlier stages' weights from ``model_dir`` (the
    bundle's ``models/`` by default): give ``--model_dir <train_root>/models`` to build on the stages just trained.

    Args:
        bundle: the bundle folder.
        stage: a stage the bundle has a ``train_<stage>.json`` for: autoencoder and diffusion; MedCoDi-M's
            autoencoder, report_vae, alignment, stream (with ``stream``) and joint.
        dataset_dir: the training data in the bundle's layout (default: the config's, data/<kind>).
        max_iterations: training length (default: the config's).
        train_dir: checkpoints, sample grids and TensorBoard logs (default: <train_root>/<stage>).
        bank: description-conditioned bundles: the description bank of ``dataset_dir`` (default: the bundle's bank/).
        progress: show a progress bar.
        stream: the ``stream`` stage's stream (MedCoDi-M: frontal, lateral or report).
        multi_gpu: distributed data-parallel training with the bundle's ``configs/multi_gpu_train.json``; launch the
            command under ``python -m torch.distributed.run --nproc_per_node N -m medgen_monai train ...`` (each
            process trains on its share of every batch of ``train_batch_size``; only rank 0 writes).
        train_root: where the run writes (default: ``train/<bundle name>`` under the working directory).
        model_dir: where the earlier stages' weights are read (default: the bundle's ``models/``).

    Returns:
        the trained weights file.
    """
    root = _bundle_root(bundle)
    if multi_gpu and not (root / "configs" / "multi_gpu_train.json").is_file():
        raise ValueError(f"--multi_gpu: {root} has no configs/multi_gpu_train.json")
    stages = sorted(
        p.stem[len("train_") :] for p in (root / "configs").glob("train_*.json") if p.stem != "train_common"
    )
    if stage not in stages:
        raise ValueError(f"--stage: {root.name} has the stages {stages}, got {stage!r}")
    if (stream is not None) != (stage == "stream"):
        raise ValueError("--stream: give it with --stage stream (and only then): the stream to train")
    train_root = str(Path(train_root or Path("train") / root.name).resolve())
    configs = ["inference.json", "train_common.json", f"train_{stage}.json"] + (
        ["multi_gpu_train.json"] if multi_gpu else []
    )
    _run_bundle(
        root,
        configs,
        dataset_dir=dataset_dir,
        max_iterations=None if max_iterations is None else int(max_iterations),
        train_dir=train_dir,
        # multi-GPU: without --progress False, multi_gpu_train.json shows progress bars on rank 0 only
        progress=None if multi_gpu and progress else bool(progress),
        stream=stream,
        train_root=train_root,
        model_dir=model_dir,
        **_description_options(root, bank),
    )
    return str(Path(train_root) / "models" / f"{stream or stage}.pt")


def evaluate(
    bundle: str,
    out: str,
    dataset_dir: str | None = None,
    n: int | None = None,
    steps: int | None = None,
    bank: str | None = None,
    progress: bool = True,
    size: int | str | Sequence[int] | None = None,
) -> str:
    """Generate ``n`` images per class with a bundle and score them against the test split of ``dataset_dir``
    (``configs/inference.json`` + ``configs/evaluate.json``); writes ``evaluation.json`` and ``evaluation.png`` in
    ``out``.

    Args:
        bundle: the bundle folder.
        out: output folder for the generated images and the report.
        dataset_dir: the reference data in the bundle's layout (default: the config's).
        n: images per class (default: the config's).
        steps: sampling steps (default: the bundle's).
        bank: description-conditioned bundles: the description bank (default: the bundle's bank/).
        progress: show progress bars.
        size: ``H,W``: the size generated and real images are compared at (default: the bundle's image size;
            real images of any size are resized to it).
    """
    root = _bundle_root(bundle)
    eval_size = None if size is None else _size(size)
    if isinstance(eval_size, int):
        eval_size = (eval_size, eval_size)
    if eval_size is not None and (len(eval_size) != 2 or min(eval_size) < 1):
        raise ValueError(f"--size: expected two positive integers H,W (e.g. 64,64) for 2D bundles, got {size!r}")
    _run_bundle(
        root,
        ["inference.json", "evaluate.json"],
        output_dir=str(out),
        dataset_dir=dataset_dir,
        n=None if n is None else int(n),
        num_inference_steps=steps,
        progress=bool(progress),
        eval_size=eval_size,
        **_description_options(root, bank),
    )
    return str(Path(out) / "evaluation.json")


def describe(
    images: str,
    task: str,
    out: str,
    backend: str = "oracle",
    layout: str | None = None,
    model: str | None = None,
    url: str | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    seed: int = 0,
    api_key: str | None = None,
    max_new_tokens: int = 512,
    timeout: float = 60.0,
    concurrency: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    reveal_class: bool = False,
    progress: bool = True,
) -> str:
    """Describe a dataset's images into a description bank (resumable: a rerun skips described images).

    Args:
        images: a dataset root in a known layout (read with medgen_monai.data.read_dataset) or a JSON datalist.
        task: derm, colon or cxr (frontal view).
        out: the bank folder (per-category JSONL, rejected.jsonl, bank.json).
        backend: oracle (from known attributes), transformers (a local Hugging Face VLM folder) or openai
            (an OpenAI-compatible server: vLLM, Ollama, llama.cpp).
        layout: isic, kvasir or mimic_cxr (default: the task's).
        model: transformers: the local model folder; openai: the served model name.
        url: openai: the API root, e.g. http://127.0.0.1:8000/v1.
        batch_size: images per backend call and per flush to disk.
        limit: describe at most this many new images.
        seed: oracle phrasing seed.
        api_key: openai: bearer token (default: $OPENAI_API_KEY, if set).
        max_new_tokens: answer length limit (transformers: new tokens; openai: max_tokens).
        timeout: openai: seconds per request.
        concurrency: openai: requests in flight.
        device: transformers: cuda or cpu (default: cuda when available).
        dtype: transformers: float32, bfloat16, float16 or auto.
        reveal_class: tell the model the image's class (off: the class checks the answer).
        progress: show a progress bar.
    """
    from .describe import TASKS, describe_dataset, get_describer, get_task, load_datalist

    describe_task = get_task(task)
    datalist = load_datalist(images, layout or TASKS[describe_task.name])
    options: dict[str, object] = {}
    if backend == "transformers":
        options = {
            "batch_size": int(batch_size),
            "max_new_tokens": int(max_new_tokens),
            "device": device,
            "dtype": dtype,
            "reveal_class": bool(reveal_class),
        }
    elif backend == "openai":
        options = {
            "api_key": api_key or os.environ.get("OPENAI_API_KEY"),
            "timeout": float(timeout),
            "concurrency": int(concurrency),
            "max_tokens": int(max_new_tokens),
            "reveal_class": bool(reveal_class),
        }
    describer = get_describer(backend, describe_task, model=model, url=url, seed=int(seed), **options)
    summary = describe_dataset(
        datalist,
        describe_task,
        describer,
        out,
        batch_size=int(batch_size),
        progress=bool(progress),
        limit=None if limit is None else int(limit),
    )
    lines = [
        f"bank {summary['bank']}: task {summary['task']}, backend {summary['backend']}, model {summary['model']}",
        f"this run: {summary['described']} described, {summary['accepted_now']} accepted, "
        f"{summary['rejected_now']} rejected, {summary['failed']} failed (server errors, timeouts: asked again by "
        f"the next run), {summary['skipped']} skipped (already in the bank)",
        f"bank: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"rejection rate {summary['rejection_rate']:.3f}",
    ]
    lines += [f"  {category}: {n}" for category, n in summary["counts"].items()]
    if summary["reasons"]:
        lines.append(
            "rejection reasons this run: " + ", ".join(f"{k} {v}" for k, v in sorted(summary["reasons"].items()))
        )
    return "\n".join(lines)


def bank_stats(bank: str, plot: str | None = None) -> str:
    """Statistics of a description bank as JSON: descriptions per category, attribute coverage, rejections.

    Args:
        bank: the bank folder (per-category JSONL files, rejected.jsonl, bank.json).
        plot: also write a PNG bar chart of the counts here.
    """
    from .describe import DescriptionBank

    description_bank = DescriptionBank(bank)
    stats = description_bank.stats()
    if plot is not None:
        stats["plot"] = str(description_bank.write_stats_plot(plot))
    return json.dumps(stats, indent=2)


def _outputs_complete(folder: Path) -> list[Path]:
    """Check a finished generation folder and return the DICOM outputs to push (``*.dcm`` files, ``*_dcm/`` folders).

    Every sidecar's recorded files must exist, and every DICOM output must belong to a sidecar.
    """
    sidecars = {}
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ValueError(f"{path}: not a JSON sidecar ({e})") from None
        if isinstance(record, dict) and isinstance(record.get("files"), dict):
            sidecars[path] = record
    if not sidecars:
        raise ValueError(f"{folder}: the bundle wrote no output (no sidecar)")
    recorded: set[str] = set()
    for path, record in sidecars.items():
        names = [
            str(name) for value in record["files"].values() for name in (value if isinstance(value, list) else [value])
        ]
        missing = [name for name in names if not (folder / name).exists()]
        if missing or "dicom" not in record["files"]:
            raise ValueError(
                f"{path}: output incomplete: {'missing ' + ', '.join(missing) if missing else 'no dicom file recorded'}"
            )
        recorded.update(names)
    dicom = sorted(
        p for p in folder.iterdir() if (p.is_file() and p.suffix == ".dcm") or (p.is_dir() and p.name.endswith("_dcm"))
    )
    unrecorded = [p.name for p in dicom if p.name not in recorded]
    if unrecorded:
        raise ValueError(f"{folder}: DICOM outputs without a sidecar: {', '.join(unrecorded)}")
    return dicom


def pacs_run(
    bundle: str,
    pacs: str,
    study: str,
    out: str,
    n: int = 1,
    category: str | None = None,
    seed: int = 0,
    steps: int | None = None,
    description: str | None = None,
    guidance: float | None = None,
    patient_id_prefix: str = "SYN",
    calling_aet: str = "MEDGEN",
    timeout: float = 10.0,
    progress: bool = True,
    outputs: str | Sequence[str] | None = None,
) -> str:
    """Pull a study from a PACS, generate with a bundle conditioned on it, and push the synthetic DICOM back.

    The study is retrieved into a temporary folder and read (:func:`medgen_monai.io.dicom.read_study`); its
    de-identified reference (allow-listed attributes only) goes to the DICOM writer, and for description-conditioned
    bundles (with a ``bank/``) its SR report text becomes the description when neither ``--description`` nor
    ``--category`` is given. Generation runs through the bundle's ``configs/inference.json`` (as ``generate``) with
    formats png,dicom into a temporary folder beside ``out``, which becomes ``out`` only once every output and its
    sidecar are complete; then the ``.dcm`` files and ``<id>_dcm/`` series are stored. If anything before the push
    fails, nothing is pushed and nothing is left on disk; if the push fails, the complete outputs stay in ``out``.

    Args:
        bundle: the bundle folder, e.g. bundles/ldm_label_derm.
        pacs: dicom://AET@host:port (DIMSE: C-GET / C-STORE) or http(s)://host:port/<dicomweb root> (WADO-RS / STOW-RS).
        study: the StudyInstanceUID to pull.
        out: a new (or empty) output folder: PNG, DICOM and the sidecars.
        n: samples per category.
        category: one class or a comma-separated list; default every class (or the report, see above).
        seed: first seed.
        steps: sampling steps (default: the bundle's).
        description: description-conditioned bundles: the description (instead of the study's report).
        guidance: classifier-free guidance scale (default: the bundle's).
        patient_id_prefix: prefix of the synthetic PatientID.
        calling_aet: our AE title (DIMSE).
        timeout: seconds to reach the PACS before failing.
        progress: show a progress bar.
        outputs: multi-stream bundles (MedCoDi-M): the streams to generate (comma-separated); default every stream
            the study lacks. The study's views (found by ViewPosition) and its de-identified report are the inputs.

    Returns:
        a JSON summary: the study pulled, the synthetic study and instances pushed, the output folder.
    """
    import shutil
    import tempfile

    from .io.dicom import conditioning_from_study, read_study
    from .io.pacs import PacsClient

    root = _bundle_root(bundle)
    if int(n) < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    if not isinstance(study, str) or not study.strip():
        raise ValueError(f"--study: expected a StudyInstanceUID, got {study!r}")
    study = study.strip()
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"--out {out_dir}: exists and is not an empty folder; pacs-run writes a new folder")
    _description_options(root, None, description)  # refuses --description for label bundles
    _report_options(root, category=category)  # a report bundle reads its class from the report
    client = PacsClient.from_url(pacs, calling_aet=calling_aet, timeout=timeout)

    stream_bundle = _is_stream_bundle(root)
    if outputs is not None and not stream_bundle:
        raise ValueError("--outputs: only for multi-stream bundles (medcodim_cxr)")
    if category is not None and stream_bundle:
        raise ValueError("--category: a multi-stream bundle has no classes; its study's views and report condition it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # a multi-stream bundle is conditioned on the study's views: their pixels stay in a private folder until the
    # generation is over (as PNGs: nothing of their headers goes further)
    views_dir = Path(tempfile.mkdtemp(prefix="medgen-pacs-views-")) if stream_bundle else None
    try:
        with tempfile.TemporaryDirectory(prefix="medgen-pacs-study-") as pulled:
            files = client.retrieve_study(study, pulled)
            read = read_study(pulled)
            conditioning = conditioning_from_study(read)
            view_inputs = _study_view_pngs(read, views_dir) if stream_bundle else {}
        return _pacs_generate_and_push(
            root,
            client,
            study,
            files,
            conditioning,
            view_inputs,
            out_dir,
            n,
            category,
            seed,
            steps,
            description,
            guidance,
            patient_id_prefix,
            progress,
            outputs,
        )
    finally:
        if views_dir is not None:
            shutil.rmtree(views_dir, ignore_errors=True)


def _is_stream_bundle(root: Path) -> bool:
    """A multi-stream bundle (MedCoDi-M): its inference config chooses ``inputs`` and ``outputs``."""
    config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    return "inputs" in config and "outputs" in config


def _study_view_pngs(study: Any, folder: Path) -> dict[str, str]:
    """The study's frontal / lateral views (by ViewPosition) as PNG files in ``folder``: modality -> path."""
    from .io.dicom import study_views
    from .io.writers import save_image_2d
    from .transforms import read_image_channels

    pngs = {}
    for view, path in study_views(study).items():
        pixels = read_image_channels(path, 1)[0].round().astype("uint8")
        pngs[view] = str(save_image_2d(pixels, folder / f"{view}.png"))
    return pngs


def _pacs_generate_and_push(
    root: Path,
    client: Any,
    study: str,
    files: Sequence[Path],
    conditioning: dict[str, Any],
    view_inputs: dict[str, str],
    out_dir: Path,
    n: int,
    category: str | None,
    seed: int,
    steps: int | None,
    description: str | None,
    guidance: float | None,
    patient_id_prefix: str,
    progress: bool,
    outputs: str | Sequence[str] | None,
) -> str:
    """The rest of :func:`pacs_run`, once the study is read."""
    import shutil
    import tempfile

    import pydicom

    from .errors import PacsError

    description_bundle = (root / "bank").is_dir()
    report_bundle = _is_report_bundle(root)
    stream_bundle = bool(view_inputs) or _is_stream_bundle(root)
    report = conditioning.get("report")  # de-identified by the reader with the study's own identifying values
    report_used = False
    if description is not None:  # free text from the command line is scrubbed as well, before MONAI logs it
        from .text.deid import scrub_text

        description = scrub_text(str(description))[0]
    if description is None and category is None and description_bundle and report:
        description, report_used = report, True
    report_options: dict[str, object] = {}
    if report_bundle:  # a report bundle is conditioned on the study's report (or on none)
        report_options, report_used = {"report": report or ""}, bool(report)
    if stream_bundle:  # the study's views and report condition; the streams it lacks are generated
        modalities = json.loads((root / "configs" / "inference.json").read_text())["modalities"]
        inputs = {**view_inputs, **({"report": report} if report else {})}
        wanted = [o.strip() for o in outputs.split(",")] if isinstance(outputs, str) else list(outputs or [])
        wanted = wanted or [m for m in modalities if m not in inputs]
        if not wanted:
            raise ValueError(f"study {study} already holds every stream ({sorted(inputs)}); name --outputs to generate")
        inputs = {m: v for m, v in inputs.items() if m not in wanted}
        report_options, report_used = {"inputs": inputs, "outputs": wanted}, "report" in inputs
    # a 3D bundle's series are written as NIfTI (PNG is 2D) and DICOM
    formats = (
        "nifti,dicom"
        if len(json.loads((root / "configs" / "inference.json").read_text())["image_size"]) == 3
        else "png,dicom"
    )

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        dicom_options = {
            "patient_id_prefix": str(patient_id_prefix),
            "reference": dict(conditioning.get("reference") or {}),
        }
        _run_bundle(
            root,
            ["inference.json"],
            output_dir=str(staging),
            n=int(n),
            category=category,
            seed=int(seed),
            num_inference_steps=steps,
            guidance_scale=guidance,
            formats=formats,
            progress=bool(progress),
            dicom_options=dicom_options,
            **_description_options(root, None, description),
            **report_options,
        )
        _outputs_complete(staging)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    to_push = _outputs_complete(out_dir)
    try:
        pushed = client.store(to_push)
    except PacsError as e:
        raise PacsError(f"{e}; the outputs are complete in {out_dir} (push them with PacsClient.store)") from None
    instances = [p for item in to_push for p in ([item] if item.is_file() else sorted(item.iterdir()))]
    synthetic_studies = sorted({str(pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID) for p in instances})
    return json.dumps(
        {
            "pacs": client.address,
            "study_pulled": study,
            "instances_pulled": len(files),
            ("report_used" if report_bundle or stream_bundle else "report_used_as_description"): report_used,
            "synthetic_study": synthetic_studies[0] if len(synthetic_studies) == 1 else synthetic_studies,
            "instances_pushed": pushed,
            "output_dir": str(out_dir),
        },
        indent=2,
    )


def pacs_echo(pacs: str, calling_aet: str = "MEDGEN", timeout: float = 10.0) -> str:
    """Check that a PACS answers (C-ECHO, or a QIDO-RS query for DICOMweb).

    Args:
        pacs: dicom://AET@host:port or http(s)://host:port/<dicomweb root>.
        calling_aet: our AE title (DIMSE).
        timeout: seconds to reach the PACS before failing.
    """
    from .io.pacs import PacsClient

    client = PacsClient.from_url(pacs, calling_aet=calling_aet, timeout=timeout)
    client.echo()
    return f"{client.address}: answers"


def pacs_store(pacs: str, path: str, calling_aet: str = "MEDGEN", timeout: float = 10.0) -> str:
    """Store DICOM outputs in a PACS (C-STORE or STOW-RS): a ``.dcm`` file, or every ``.dcm`` file under a folder
    (e.g. ``generate --format dicom``'s output folder; PNGs and sidecars beside them are left alone).

    Args:
        pacs: dicom://AET@host:port or http(s)://host:port/<dicomweb root>.
        path: a file or a folder.
        calling_aet: our AE title (DIMSE).
        timeout: seconds to reach the PACS before failing.
    """
    from .io.pacs import PacsClient

    root = Path(path)
    if root.is_dir():
        files = sorted(
            p for p in root.rglob("*.dcm") if not any(part.startswith(".") for part in p.relative_to(root).parts)
        )
        if not files:
            raise ValueError(f"--path {root}: no .dcm file in it (write some with generate --format dicom)")
    elif root.is_file():
        files = [root]
    else:
        raise ValueError(f"--path {root}: no such file or folder")
    client = PacsClient.from_url(pacs, calling_aet=calling_aet, timeout=timeout)
    return json.dumps({"pacs": client.address, "instances_stored": client.store(files)}, indent=2)


def export(
    bundle: str, out: str, encoder: bool = True, untrained: bool = False, batch_size: int = 2, verify: bool = True
) -> str:
    """Export a bundle's inference networks with ``torch.export`` (``<out>/<name>.pt2``, ``torch.export.load``) and a
    manifest ``<out>/export.json`` of their inputs, outputs and calls (:mod:`medgen_monai.export`; docs/deployment.md).

    Args:
        bundle: the bundle folder, e.g. bundles/vap_diffusion_derm.
        out: a new or empty folder, or an earlier export (replaced); not inside the bundle folder.
        encoder: also export the autoencoder's encoder (images -> normalised latents); ``--noencoder``: not.
        untrained: random initialisation instead of the bundle's weights (bundles without weights yet).
        batch_size: the example batch (>= 2); the exported batch dimension is dynamic.
        verify: load every program back and compare it with its network (``--noverify``: skip).

    Returns:
        a JSON summary: the folder, each network's file, call and measured difference from its network.
    """
    from .export import export_bundle

    root = _bundle_root(bundle)
    manifest = export_bundle(
        root, out, weights=not untrained, encoder=bool(encoder), batch_size=int(batch_size), verify=bool(verify)
    )
    return json.dumps(
        {
            "out": str(out),
            "bundle": manifest["bundle"]["name"],
            "networks": {
                name: {k: entry[k] for k in ("file", "call", "max_abs_difference") if k in entry}
                for name, entry in manifest["networks"].items()
            },
            "not_exported": sorted(manifest["not_exported"]),
        },
        indent=2,
    )


def main(argv: Sequence[str] | None = None) -> None:
    import fire

    from .errors import PacsError

    commands = {
        "phantoms": phantoms,
        "vocabulary": vocabulary,
        "gallery": gallery,
        "demo": demo,
        "train-audit": train_audit,
        "generate": generate,
        "train": train,
        "evaluate": evaluate,
        "describe": describe,
        "bank-stats": bank_stats,
        "pacs-run": pacs_run,
        "pacs-echo": pacs_echo,
        "pacs-store": pacs_store,
        "export": export,
    }
    try:
        fire.Fire(commands, command=list(sys.argv[1:] if argv is None else argv), name="medgen-monai")
    except (ValueError, PacsError) as e:  # bad input (DatasetError, DicomError) or a PACS that failed: one line
        print(f"medgen-monai: error: {e}", file=sys.stderr)
        sys.exit(2)
