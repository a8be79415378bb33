"""The MedCoDi-M bundle's studies (issue 16), written to ``benchmarks/results/medcodi.json``.

Every task is run on held-out studies: fresh cxr phantoms of the ``medcodi`` seed range (no bundle trains on them),
written in the MIMIC-CXR-JPG layout and read back by the real reader; a task's inputs are a study's views / report
and its truth is that study's attributes.

Stages (``--stages``, comma-separated):

- ``tasks``: for each task of :data:`TASKS`, ``--n`` requests through the bundle's ``inference.json``:
  - every generated view: valid fraction and attribute accuracy as the audit network of that view reads it
    (against the source study's attributes), FID against real views of the ``reference`` seed over its matched
    real-vs-real floor (:func:`medgen_monai.metrics.reference.fid_floor`);
  - cross-view consistency: per attribute both views show, how often the finding read from a generated view agrees
    with the finding read from the real view it came from (frontal -> lateral, lateral -> frontal; goal >= 0.9), and
    with the findings stated by the report it came from (report -> views);
  - every generated report: BLEU-1..4 (sacrebleu) and ROUGE-L F (rouge-score) against the study's report (both
    lower-cased: the bundle's report tokenizer is uncased), and clinical label F1: the findings the report states
    (:func:`medgen_monai.metrics.report_labels.cxr_report_labels`) against the study's (goal >= 0.9).
- ``joint``: the tasks that generate several streams, with the connectors on (joint) and off (independent, the
  same weights), scored as above: what joint generation buys in cross-stream agreement.
- ``prompts``: multi- against single-prompt training on the same budget and seeds. Each arm is a copy of the bundle
  (its autoencoder, report VAE and aligned encoders; no joint connectors) whose three streams are trained from
  scratch with ``--seeds`` training seeds: ``multi`` draws each stream's condition from the other modalities (the
  bundle's recipe), ``single`` conditions each view on the report only and the report on the frontal view only
  (one prompt per stream, as text-to-image models train). Every task is then scored as in ``tasks``; mean and sd
  over seeds.

    python benchmarks/medcodi.py --stages tasks,joint [--bundle-dir bundles/medcodim_cxr] [--n 200]
    python benchmarks/medcodi.py --stages prompts --seeds 0,1,2 [--iterations N]

Cost on 2 CPU cores: about 0.1 s per generated view at 30 steps (one thread) plus the report decoding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgen_monai.cli import _run_bundle  # noqa: E402
from medgen_monai.data import read_dataset, write_dataset  # noqa: E402
from medgen_monai.engines import dataset_stream_requests  # noqa: E402
from medgen_monai.io.atomic import atomic_write_text  # noqa: E402
from medgen_monai.metrics import attribute_accuracy, feature_extractor, load_audit  # noqa: E402
from medgen_monai.metrics.evaluation import load_images  # noqa: E402
from medgen_monai.metrics.fid import fid_from_features  # noqa: E402
from medgen_monai.metrics.reference import fid_floor  # noqa: E402
from medgen_monai.metrics.report_labels import cxr_report_attributes, cxr_report_labels, label_f1  # noqa: E402
from medgen_monai.phantoms import get_phantom  # noqa: E402
from medgen_monai.phantoms.seeds import MEDCODI_SEEDS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("tasks", "joint", "prompts")
#: the prompt ablation's arms: stream -> its condition options (None: the bundle's multi-prompt options)
PROMPT_ARMS: dict[str, dict[str, list[list[str]]] | None] = {
    "multi": None,
    "single": {"frontal": [["report"]], "lateral": [["report"]], "report": [["frontal"]]},
}
#: what an arm's copy takes from the bundle (trained once, shared by every arm)
SHARED_STAGES = ("autoencoder", "report_vae", "alignment")
#: task name -> (inputs, outputs): the issue's six tasks and the unconditional joint one
TASKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "frontal->lateral": (("frontal",), ("lateral",)),
    "lateral->frontal": (("lateral",), ("frontal",)),
    "frontal->report": (("frontal",), ("report",)),
    "frontal+lateral->report": (("frontal", "lateral"), ("report",)),
    "report->frontal+lateral": (("report",), ("frontal", "lateral")),
    "report+frontal->lateral": (("report", "frontal"), ("lateral",)),
    "unconditional->all": ((), ("frontal", "lateral", "report")),
}
VIEWS = ("frontal", "lateral")


def held_out_studies(n: int, work: Path, seed: int = MEDCODI_SEEDS["studies"], size: int = 64) -> list[dict[str, Any]]:
    """``n`` fresh cxr studies written in the MIMIC-CXR-JPG layout under ``work`` and read back (datalist records)."""
    root = work / f"studies_{seed}_{n}"
    if not (root / "mimic-cxr-2.0.0-metadata.csv").is_file():
        write_dataset("mimic_cxr", get_phantom("cxr").generate_many(n, seed=seed, size=size), root)
    return sorted(read_dataset("mimic_cxr", root), key=lambda r: r["id"])


def reference_views(n: int, seed: int = MEDCODI_SEEDS["reference"], size: int = 64) -> dict[str, list[np.ndarray]]:
    """``n`` real frontal and lateral views of fresh studies (the FID reference and its floor)."""
    views: dict[str, list[np.ndarray]] = {v: [] for v in VIEWS}
    for sample in get_phantom("cxr").generate_many(n, seed=seed, size=size):
        for view in VIEWS:
            views[view].append(sample.images[view])
    return views


def _visible(unit_audit: Any, attributes: Mapping[str, str]) -> dict[str, str]:
    heads = set(unit_audit.spec.head_names)
    return {k: v for k, v in attributes.items() if k in heads}


def _agreement(a: Mapping[str, Sequence[str]], b: Mapping[str, Sequence[str]], names: Sequence[str]) -> dict[str, Any]:
    per = {n: float(np.mean([x == y for x, y in zip(a[n], b[n])])) for n in names}
    return {"per_attribute": per, "mean": float(np.mean(list(per.values()))) if per else None}


def generate_task(
    root: Path, requests: Sequence[Mapping[str, Any]], out: Path, steps: int | None, connect: bool | None = None
) -> list[dict[str, Any]]:
    """Run the bundle on ``requests`` (one task: every request has the same outputs) into ``out``; the sidecars, in
    request order. Outputs kept from an earlier run are reused only when they were made with the same weights."""
    import shutil

    from medgen_monai.engines import stream_weight_files
    from medgen_monai.io.weights import bundle_info

    outputs = {tuple(r["outputs"]) for r in requests}
    if len(outputs) != 1:
        raise ValueError(f"generate_task: one task per call, got outputs {sorted(outputs)}")
    weights = bundle_info(root, stream_weight_files(root / "models"))["weights_sha256"]
    kept = [json.loads(p.read_text()) for p in out.glob("*.json")] if out.is_dir() else []
    if any(k.get("bundle", {}).get("weights_sha256") != weights for k in kept):
        shutil.rmtree(out)  # made by other weights: not this bundle's outputs any more
    overrides: dict[str, Any] = {
        "requests": list(requests),
        "outputs": list(next(iter(outputs))),
        "output_dir": str(out),
        "progress": False,
        "num_inference_steps": steps,
    }
    if connect is not None:
        overrides["network_def#connect"] = bool(connect)
    _run_bundle(root, ["inference.json"], **overrides)
    return [json.loads((out / f"{r['id']}.json").read_text()) for r in requests]


def score_task(
    name: str,
    studies: Sequence[Mapping[str, Any]],
    sidecars: Sequence[Mapping[str, Any]],
    out: Path,
    reference: Mapping[str, Any],
    audits: Mapping[str, Any],
) -> dict[str, Any]:
    """Every measure of one task's outputs (see the module docstring)."""
    inputs, outputs = TASKS[name]
    truth = [s["attributes"] for s in studies]
    result: dict[str, Any] = {
        "inputs": list(inputs),
        "outputs": list(outputs),
        "n": len(sidecars),
        "joint_generation": bool(sidecars[0].get("joint_generation", False)),
    }
    read: dict[str, dict[str, list[str]]] = {}
    for view in (v for v in outputs if v in VIEWS):
        audit = audits[view]["audit"]
        images = load_images([out / f"{s['id']}_{view}.png" for s in sidecars])
        scored = attribute_accuracy(images, [_visible(audit, t) for t in truth], audit=audit)
        features = audits[view]["extractor"](images)
        pool = reference["features"][view]
        rng = np.random.default_rng(0)
        subset = rng.choice(len(pool), size=len(images), replace=False)
        floor = fid_floor(pool, len(images), repeats=10, seed=0)
        fid_value = fid_from_features(pool[subset], features)
        result[view] = {
            "valid_fraction": scored["valid_fraction"],
            "attribute_accuracy": scored["mean"],
            "per_attribute": scored["per_attribute"],
            "fid": fid_value,
            "fid_floor": {"mean": floor["mean"], "sd": floor["sd"]},
            "fid_ratio": fid_value / floor["mean"] if floor["mean"] > 0 else None,
        }
        read[view] = audit.assess(images)["values"]
    # cross-view consistency: a generated view against the real view it came from, on the attributes both show
    for source in (v for v in inputs if v in VIEWS):
        audit_in = audits[source]["audit"]
        real_read = audit_in.assess(load_images([s[source] for s in studies]))["values"]  # once per input view
        for view in read:
            shared = sorted(
                (set(audits[view]["audit"].spec.head_names) & set(audit_in.spec.head_names))
                - {h for h in audit_in.spec.head_names if h.startswith("label")}
            )
            result[f"consistency_{source}_to_{view}"] = _agreement(read[view], real_read, shared)
    if "report" in inputs:  # generated views against the findings their report states
        stated = [cxr_report_attributes(s["text"]) for s in studies]
        for view in read:
            names = sorted(set(stated[0]) & set(read[view]))
            result[f"consistency_report_to_{view}"] = _agreement(
                read[view], {n: [a[n] for a in stated] for n in names}, names
            )
    if "report" in outputs:
        result["report"] = score_reports([s["generated"]["report"] for s in sidecars], studies)
        if len(outputs) > 1:  # the views generated with it against the findings it states
            stated = [cxr_report_attributes(s["generated"]["report"]) for s in sidecars]
            for view in read:
                names = sorted(set(stated[0]) & set(read[view]))
                result[f"consistency_generated_report_to_{view}"] = _agreement(
                    read[view], {n: [a[n] for a in stated] for n in names}, names
                )
    return result


def score_reports(generated: Sequence[str], studies: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """BLEU-1..4, ROUGE-L and clinical label F1 of generated reports against their studies'."""
    import sacrebleu
    from rouge_score import rouge_scorer

    references = [s["text"].lower() for s in studies]
    hypotheses = [g.lower() for g in generated]
    bleu = {
        f"bleu{k}": sacrebleu.metrics.BLEU(max_ngram_order=k).corpus_score(hypotheses, [references]).score / 100
        for k in (1, 2, 3, 4)
    }
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    rouge = float(np.mean([scorer.score(r, h)["rougeL"].fmeasure for r, h in zip(references, hypotheses)]))
    labels = label_f1([cxr_report_labels(g) for g in generated], [s["label_name"] for s in studies])
    return {
        **bleu,
        "rouge_l": rouge,
        "label_f1": labels,
        "empty_fraction": float(np.mean([not g.strip() for g in generated])),
    }


def run(root: Path, stages: Sequence[str], n: int, work: Path, steps: int | None = None) -> dict[str, Any]:
    """The ``tasks`` and ``joint`` stages of ``root`` on ``n`` held-out studies."""
    if not stages:
        return {}
    studies = held_out_studies(n, work)
    reference = reference_views(max(2 * n + 2, 200))
    audits = {}
    for view in VIEWS:
        audit = load_audit(f"cxr_{view}")
        audits[view] = {"audit": audit, "extractor": feature_extractor(audit)}
    reference["features"] = {v: audits[v]["extractor"](reference[v]) for v in VIEWS}
    results: dict[str, Any] = {}
    if "tasks" in stages:
        results["tasks"] = {}
        for name, (inputs, outputs) in TASKS.items():
            requests = dataset_stream_requests(studies, n, 0, list(inputs), list(outputs))
            sidecars = generate_task(root, requests, work / name.replace(">", "_").replace("+", "_"), steps)
            results["tasks"][name] = score_task(
                name, studies, sidecars, work / name.replace(">", "_").replace("+", "_"), reference, audits
            )
            print(f"{name}: {json.dumps(_short(results['tasks'][name]))}", flush=True)
    if "joint" in stages:
        results["joint"] = {}
        for name, (inputs, outputs) in TASKS.items():
            if len(outputs) < 2:
                continue
            requests = dataset_stream_requests(studies, n, 0, list(inputs), list(outputs))
            arms = {}
            for arm, connect in (("joint", True), ("independent", False)):
                out = work / f"{arm}_{name.replace('>', '_').replace('+', '_')}"
                arms[arm] = score_task(
                    name, studies, generate_task(root, requests, out, steps, connect), out, reference, audits
                )
            results["joint"][name] = arms
            print(f"{name} joint vs independent: {json.dumps({a: _short(v) for a, v in arms.items()})}", flush=True)
    return results


def arm_copy(root: Path, arm: str, seed: int, work: Path, batch_size: int | None = None) -> Path:
    """A copy of the bundle for one arm and training seed: its configs (the arm's prompt options, the seed) and the
    shared stages' weights; the streams are trained into it."""
    import shutil

    target = work / f"prompts_{arm}_seed{seed}"
    if not (target / "configs" / "inference.json").is_file():
        tmp = work / f".{target.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(root / "configs", tmp / "configs")
        (tmp / "models").mkdir(parents=True)
        for stage in SHARED_STAGES:
            shutil.copy2(root / "models" / f"{stage}.pt", tmp / "models" / f"{stage}.pt")
        stream = json.loads((tmp / "configs" / "train_stream.json").read_text())
        stream["training_seed"] = int(seed)
        if batch_size is not None:
            stream["train_batch_size"] = int(batch_size)
        if PROMPT_ARMS[arm] is not None:
            stream["arm_prompt_options"] = PROMPT_ARMS[arm]
            stream["prompt_options"] = "$@arm_prompt_options[@stream]"
        (tmp / "configs" / "train_stream.json").write_text(json.dumps(stream, indent=4) + "\n")
        tmp.rename(target)
    return target


def prompt_ablation(
    root: Path,
    seeds: Sequence[int],
    iterations: int | None,
    n: int,
    work: Path,
    data: Path,
    steps: int | None,
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Per arm and seed: train the three streams (resuming), score every task; per arm, the mean and sd over seeds of
    the headline measures."""
    from medgen_monai.cli import train

    modalities = json.loads((root / "configs" / "inference.json").read_text())["modalities"]
    results: dict[str, Any] = {}
    for arm in PROMPT_ARMS:
        runs = {}
        for seed in seeds:
            copy = arm_copy(root, arm, int(seed), work, batch_size)
            for stream in modalities:
                train(
                    str(copy),
                    "stream",
                    dataset_dir=str(data),
                    max_iterations=iterations,
                    progress=False,
                    stream=stream,
                    train_dir=str(copy / "train" / stream),
                    train_root=str(copy),
                )
            runs[str(seed)] = run(copy, ["tasks"], n, copy / "evaluation", steps)["tasks"]
            print(
                f"prompts {arm} seed {seed}: {json.dumps({k: _short(v) for k, v in runs[str(seed)].items()})}",
                flush=True,
            )
        results[arm] = {
            "options": PROMPT_ARMS[arm] or "the bundle's multi-prompt options",
            "seeds": runs,
            "summary": _summary(runs),
        }
    return results


def _summary(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sd over seeds of each task's headline numbers (view attribute accuracy and FID ratio, consistency
    means, report BLEU-4, ROUGE-L and label micro F1)."""
    values: dict[str, list[float]] = {}
    for tasks in runs.values():
        for task, short in ((k, _short(v)) for k, v in tasks.items()):
            for key, value in short.items():
                items = value.items() if isinstance(value, Mapping) else [("mean", value)]
                for metric, number in items:
                    values.setdefault(f"{task} {key} {metric}", []).append(float(number))
    return {
        k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v)}
        for k, v in values.items()
    }


def _short(result: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of a task result (for logs)."""
    short = {}
    for key, value in result.items():
        if isinstance(value, Mapping) and "attribute_accuracy" in value:
            short[key] = {
                k: round(value[k], 3)
                for k in ("valid_fraction", "attribute_accuracy", "fid_ratio")
                if value.get(k) is not None
            }
        elif key.startswith("consistency") and value.get("mean") is not None:
            short[key] = round(value["mean"], 3)
        elif key == "report":
            short[key] = {
                "bleu4": round(value["bleu4"], 3),
                "rouge_l": round(value["rouge_l"], 3),
                "label_micro_f1": round(value["label_f1"]["micro_f1"], 3),
            }
    return short


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {list(STAGES)}")
    parser.add_argument("--bundle-dir", default=str(ROOT / "bundles" / "medcodim_cxr"))
    parser.add_argument("--n", type=int, default=200, help="held-out studies per task")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the bundle's)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "medcodi"), help="generated outputs (resumable)")
    parser.add_argument("--out", default=str(RESULTS / "medcodi.json"))
    parser.add_argument("--seeds", default="0,1,2", help="prompts stage: training seeds")
    parser.add_argument(
        "--iterations", type=int, default=None, help="prompts stage: stream iterations (default: the bundle's)"
    )
    parser.add_argument("--data", default=str(ROOT / "data" / "cxr"), help="prompts stage: the cxr training data")
    parser.add_argument(
        "--train-batch-size",
        type=int,
        default=None,
        help="prompts stage: stream training batch (default: the bundle's)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown or not stages:
        raise SystemExit(f"--stages: unknown {unknown}; expected some of {list(STAGES)}")
    if args.n < 2:
        raise SystemExit("--n must be >= 2 (FID needs two images)")
    torch.manual_seed(0)
    results = run(Path(args.bundle_dir), [s for s in stages if s != "prompts"], args.n, Path(args.work), args.steps)
    if "prompts" in stages:
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        results["prompts"] = prompt_ablation(
            Path(args.bundle_dir),
            seeds,
            args.iterations,
            args.n,
            Path(args.work),
            Path(args.data),
            args.steps,
            args.train_batch_size,
        )
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    record = {
        **previous,
        **results,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__},
        "command": "python benchmarks/medcodi.py " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    atomic_write_text(out, json.dumps(record, indent=2, default=float) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
