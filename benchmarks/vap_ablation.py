"""VAP-Diffusion ablation: label vs description vs description + prototype (+ kNN projection), per modality.

Writes benchmarks/results/vap_ablation.json, shaped
``{modality: {condition: {split: {metric: {"mean": x, "sd": y}}}}}`` (modality ``derm``, ``colon``, ``cxr``;
condition ``label``, ``description``, ``description_prototype``, ``description_prototype_projection``; split
``seen``, ``heldout``; metric ``attribute_accuracy``, ``fid``, ``diversity``), plus
benchmarks/results/vap_ablation_runs.json (every run's numbers, the reference values, the settings) and
benchmarks/results/vap_ablation.png. Every run's row also holds ``fid_floor`` (``{"mean", "sd"}``), ``fid_ratio``
(``fid / fid_floor.mean``) and ``kid`` (``{"mean", "ci95"}``); the summary adds ``fid_ratio`` and ``kid`` (the mean
over seeds of each run's KID) where every run has them. ``python docs/build_docs.py`` turns the JSON into the table in
docs/results.md.

    python benchmarks/vap_ablation.py [--modalities derm,colon,cxr] [--seeds 0,1,2] [--iterations 2500]
                                      [--per_class 8] [--steps 25] [--work_dir runs/vap_ablation] [--jobs 2]
                                      [--threads 1] [--quick]

Modalities and seeds measured by separate invocations are merged, and arms already measured with the same
settings are not rerun (e.g. ``--modalities derm --seeds 0`` in one session, ``--seeds 1,2`` in the next); each
arm's numbers land in the results as soon as it is scored. Cost: 9 trainings per modality (3 arms x 3 seeds; the
projection arm reuses the prototype weights); with ``--jobs`` one pool of workers trains the arms of all modalities.
On this project's 2-core machines, with ``--jobs 2 --threads 1`` and nothing else running, each of the two arms
takes 0.5-0.6 s per iteration: 1290-1550 s for 2500 iterations (``train_seconds`` in the runs file, 2026-12-02).
Anything else on the machine (tests, CI) slows them a lot: the first derm pair took 3100 s.

What is compared. Every arm trains the same bundle configs (bundles/vap_diffusion_<modality>) with the same
budget, autoencoder, data order and seeds, and differs only in the switches the configs expose:

- ``label``: ``use_descriptions=false``: the same U-Net, every description replaced by the empty text, so
  the class (timestep embedding) is the only condition;
- ``description``: the description tokens by cross-attention plus the class, ``prototype=false``;
- ``description_prototype``: plus the Prototype Condition Mechanism and its loss;
- ``description_prototype_projection``: the ``description_prototype`` weights, sampled with the kNN
  projection (``projection_alpha``, ``projection_k``); it needs no training of its own.

The splits. Held-out attribute combinations (:data:`HELDOUT`) are removed from the training bank, so a
model never sees them together:

- ``seen``: per class, ``per_class`` descriptions drawn from the training bank (without the held-out
  combinations); the reference images are test phantoms (a seed disjoint from training and from the audit
  networks' training data) without the held-out combinations;
- ``heldout``: ``heldout_cap`` descriptions of test phantoms that show a held-out combination, a seeded random draw
  in the test set's class proportions; the reference images are the other test phantoms that show one.

The references. Each split's reference is a seeded random draw (:data:`REFERENCE_SEED`) of at most
``reference_cap`` of those test phantoms, stratified to the split's requests' classes (largest-remainder shares,
``medgen_monai.metrics.reference.stratified_reference``, shrunk when a class is short so the proportions hold) and
without the requests' own source images; the draw is written to ``<work>/reference.json`` and summarised under
``reference`` in the runs file. Held-out combinations are rare (2-10% of phantoms), so the test set is large
(``--test_cases`` 10000): the held-out reference must hold twice the generated set's class counts for the floor.
Settings (:data:`COMPARABLE`) include ``reference``, so runs scored against the earlier references (the first
``reference_cap`` records of a class-sorted list) are never merged with these.

The metrics, all from the audit network of the modality (medgen_monai.metrics): ``attribute_accuracy``, the
share of the requested attribute values (those of the description's source image) read back from the
generated image; ``fid`` in audit features against the split's reference images, with ``fid_floor`` (the real-vs-real
FID of two disjoint random subsets of the reference at the generated set's ``n`` and class counts, 10 repetitions,
the same for every arm and seed of a split), ``fid_ratio`` and ``kid`` (with a 95% interval), all from features
extracted once per split; ``diversity``, 1 - mean pairwise MS-SSIM within a class. The label arm is scored against
the same requests, so its attribute accuracy is what a generator that cannot be told the attributes reaches by
matching the class's attribute mix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medgen_monai.io.writers import safe_id

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"

#: modality -> (phantom kind, dataset layout, audit unit, describe task)
MODALITIES: dict[str, tuple[str, str, str]] = {
    "derm": ("derm", "isic", "derm_image"),
    "colon": ("colon", "kvasir", "colon_image"),
    "cxr": ("cxr", "mimic_cxr", "cxr_frontal"),
}

#: attribute combinations removed from the training bank (each value is seen in training, never together)
HELDOUT: dict[str, list[dict[str, str]]] = {
    "derm": [{"colour": "blue_grey", "pattern": "network"}, {"shape": "round", "size": "large"}],
    "colon": [{"morphology": "pedunculated", "size": "large"}, {"colour": "red", "location": "upper_right"}],
    "cxr": [{"effusion_side": "left", "device": "pacemaker"}, {"heart_size": "enlarged", "opacity_lobe": "upper"}],
}

CONDITIONS = ("label", "description", "description_prototype", "description_prototype_projection")
TRAINED = {
    "label": {"use_descriptions": False, "prototype": False},
    "description": {"use_descriptions": True, "prototype": False},
    "description_prototype": {"use_descriptions": True, "prototype": True},
}
SPLITS = ("seen", "heldout")
#: one arm to train: (modality, arm, seed, run dir, dataset dir, bank dir, iterations, threads), picklable for a worker
ArmTask = tuple[str, str, int, str, str, str, int, int]
METRICS = ("attribute_accuracy", "fid", "diversity")

TRAIN_SEED, TEST_SEED = (
    0,
    30000,
)  # the training and evaluation ranges of medgen_monai.phantoms.seeds (never an audit seed)
#: seed of the reference draws, the FID floors' subsets and the KID subsets
REFERENCE_SEED = TEST_SEED + 1
#: how the references are built (a setting: runs scored against other references are never merged with these);
#: "stratified-v2": a seeded random draw stratified to the requests' classes, without the requests' sources.
#: Earlier runs (no ``reference`` setting) took the first ``reference_cap`` records of a class-sorted list.
REFERENCE_METHOD = "stratified-v2"
FLOOR_REPEATS = 10


def matches(attributes: Mapping[str, str], combinations: Sequence[Mapping[str, str]]) -> bool:
    return any(all(attributes.get(k) == v for k, v in c.items()) for c in combinations)


def trained_as(condition: str) -> str:
    """The arm whose weights a condition samples with (the projection needs no training of its own)."""
    return "description_prototype" if condition == "description_prototype_projection" else condition


# ---- data and banks ------------------------------------------------------------------------------
def ensure_dataset(kind: str, layout: str, root: Path, n: int, seed: int) -> Path:
    """Phantoms in the real layout: written once (the same seed gives the same files), or the dataset already there."""
    from medgen_monai.data import read_dataset, write_dataset
    from medgen_monai.phantoms import get_phantom

    marker = root / ".complete"
    if marker.is_file() or (root.is_dir() and any(root.iterdir())):
        found = len(read_dataset(layout, root))
        if found < n:
            raise ValueError(
                f"{root}: holds {found} {kind} cases, the benchmark needs {n}; remove it or pass another folder"
            )
        return root
    write_dataset(layout, get_phantom(kind).generate_many(n, seed=seed), root)
    marker.write_text(f"{kind} n={n} seed={seed}\n")
    return root


def ensure_bank(modality: str, layout: str, dataset_dir: Path, bank_dir: Path) -> Any:
    """Describe a dataset with the attribute oracle (resumable: a rerun adds nothing) and open the bank."""
    from medgen_monai.data import read_dataset
    from medgen_monai.describe import DescriptionBank, OracleDescriber, describe_dataset, get_task

    task = get_task(modality)
    describe_dataset(read_dataset(layout, dataset_dir), task, OracleDescriber(task, seed=0), bank_dir, progress=False)
    return DescriptionBank(bank_dir)


def requests_for(
    modality: str, classes: Sequence[str], bank: Any, test_bank: Any, per_class: int, heldout_cap: int
) -> dict[str, list[dict[str, Any]]]:
    """The generation requests of both splits; the same for every arm and seed (paired comparison).

    ``seen``: ``per_class`` training-bank descriptions per class (without the held-out combinations). ``heldout``:
    ``heldout_cap`` test-bank descriptions that show a held-out combination, a seeded random draw in the held-out
    pool's own class proportions (never the first ones of a class-sorted list). Each request's ``source`` is the id
    of the image its description was written for.
    """
    from medgen_monai.metrics.reference import stratified_reference

    heldout = HELDOUT[modality]
    seen = []
    for index, category in enumerate(classes):
        if category not in bank.categories:
            continue
        pool = [r for r in bank.records(category) if not matches(r["attributes"], heldout)]
        if not pool:
            continue
        rng = np.random.default_rng([TEST_SEED, index])
        for i, j in enumerate(rng.choice(len(pool), size=per_class, replace=len(pool) < per_class)):
            r = pool[int(j)]
            seen.append(
                {
                    "id": f"seen_{safe_id(category)}_{i:03d}",
                    "seed": 1000 * index + i,
                    "category": category,
                    "description": r["description"],
                    "attributes": r["attributes"],
                    "source": r["id"],
                }
            )
    held = []
    for category in classes:
        if category in test_bank.categories:
            held.extend(r for r in test_bank.records(category) if matches(r["attributes"], heldout))
    if held:  # a random draw in the pool's class proportions (the pool is read class by class)
        held = stratified_reference(
            held,
            [r["category"] for r in held],
            min(heldout_cap, len(held)),
            TEST_SEED,
            class_of=lambda r: r["category"],
        ).records
    held_requests = [
        {
            "id": f"heldout_{i:03d}",
            "seed": 500_000 + i,
            "category": r["category"],
            "description": r["description"],
            "attributes": r["attributes"],
            "source": r["id"],
        }
        for i, r in enumerate(held)
    ]
    if not seen or not held_requests:
        raise ValueError(f"{modality}: no {'seen' if not seen else 'held-out'} requests; is the bank complete?")
    return {"seen": seen, "heldout": held_requests}


# ---- train and generate through the bundle's own configs --------------------------------------------
def bundle_dir(modality: str) -> Path:
    return ROOT / "bundles" / f"vap_diffusion_{modality}"


def ema_decay(iterations: int) -> float:
    """An EMA whose horizon is a tenth of the run: the bundles' 0.999 (horizon 1000 iterations) would leave a short
    ablation run's EMA weights mostly at their random initialisation."""
    return float(min(0.999, max(0.9, 1.0 - 10.0 / max(iterations, 1))))


def train_arm(
    modality: str, condition: str, seed: int, run_dir: Path, dataset_dir: Path, bank_dir: Path, iterations: int
) -> Path:
    from monai.bundle import run

    weights = run_dir / "diffusion.pt"
    if weights.is_file():
        return weights
    bundle = bundle_dir(modality)
    configs = [str(bundle / "configs" / f) for f in ("inference.json", "train_common.json", "train_diffusion.json")]
    run(
        config_file=configs,
        meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle),
        logging_file=str(bundle / "configs" / "logging.conf"),
        dataset_dir=str(dataset_dir),
        bank_dir=str(bank_dir),
        train_dir=str(run_dir / "train"),
        trained_model_dir=str(run_dir),
        max_iterations=int(iterations),
        training_seed=int(seed),
        excluded_combinations=HELDOUT[modality],
        sample_every=0,
        ema_decay=ema_decay(iterations),
        warmup_iterations=max(1, iterations // 10),
        checkpoint_every=max(1, iterations // 4),
        progress=False,
        **TRAINED[condition],
    )
    return weights


def train_task(task: ArmTask) -> tuple[Path, float]:
    """``train_arm`` in a worker process with its own thread count; returns the weights and the seconds it took."""
    import torch

    modality, arm, seed, run_dir, dataset_dir, bank_dir, iterations, threads = task
    torch.set_num_threads(int(threads))
    started = time.time()
    weights = train_arm(modality, arm, seed, Path(run_dir), Path(dataset_dir), Path(bank_dir), iterations)
    return weights, time.time() - started


def already_measured(out: Path, modality: str, settings: Mapping[str, Any]) -> set[tuple[int, str]]:
    """(seed, condition) pairs of ``modality`` in the results with these settings and both splits (not rerun)."""
    runs_path = out.with_name(out.stem + "_runs.json")
    if not runs_path.is_file():
        return set()
    previous = json.loads(runs_path.read_text())
    if previous.get("settings", {}).get(modality) != dict(settings) or modality not in previous.get("runs", {}):
        return set()
    runs = previous["runs"][modality]["runs"]
    return {
        (r["seed"], c)
        for c in CONDITIONS
        for r in runs.get(c, {}).get(SPLITS[0], [])
        if all(any(o["seed"] == r["seed"] for o in runs[c].get(s, [])) for s in SPLITS)
    }


def generate(
    modality: str,
    condition: str,
    weights: Path,
    requests: list[dict[str, Any]],
    out_dir: Path,
    bank_dir: Path,
    steps: int,
    projection: Mapping[str, float],
) -> None:
    from monai.bundle import ConfigParser

    bundle = bundle_dir(modality)
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    trained = TRAINED[trained_as(condition)]
    overrides = {
        "bundle_root": str(bundle),
        "bank_dir": str(bank_dir),
        "diffusion_weights": str(weights),
        "output_dir": str(out_dir),
        "num_inference_steps": int(steps),
        "progress": False,
        **trained,
        "projection_alpha": projection["alpha"] if condition.endswith("projection") else 0.0,
        "projection_k": int(projection["k"]),
    }
    for key, value in overrides.items():
        parser[key] = value
    from medgen_monai.engines import GenerationEvaluator, GenerationInferer

    parser.get_parsed_content("load_autoencoder")
    sampler = parser.get_parsed_content("sampler")  # resolving it loads the diffusion weights into @network
    # the requests are plain data handed to the evaluator, never parsed as config (a description is free text)
    inferer = GenerationInferer(
        sampler, parser.get_parsed_content("conditioner"), parser.get_parsed_content("latent_shape")
    )
    GenerationEvaluator(
        requests,
        parser.get_parsed_content("network"),
        inferer,
        parser.get_parsed_content("writer"),
        batch_size=32,
        progress=False,
    ).run()


def score(
    modality: str, requests: list[dict[str, Any]], out_dir: Path, reference: Reference, audit: Any, extractor: Any
) -> dict[str, Any]:
    """A generated split's scores against its reference: attribute accuracy, FID with its floor, KID, diversity."""
    import torch

    from medgen_monai.metrics.attributes import attribute_accuracy
    from medgen_monai.metrics.diversity import diversity
    from medgen_monai.metrics.evaluation import load_images
    from medgen_monai.metrics.reference import kid, matched_fid

    images = load_images([out_dir / f"{r['id']}.png" for r in requests])
    classes = [r["category"] for r in requests]
    with torch.no_grad():
        features = extractor(images)
    # against reference subsets of this set's size and class counts: the footing of the floor
    fid_value = matched_fid(reference.features, features, reference.classes, Counter(classes), seed=REFERENCE_SEED)[
        "mean"
    ]
    kid_value = kid(reference.features, features, seed=REFERENCE_SEED)
    floor = reference.floor
    if max(classes.count(c) for c in classes) < 2:  # only --quick gets here: too few images for a within-class score
        classes = ["all"] * len(classes)
    scored = attribute_accuracy(images, [r["attributes"] for r in requests], audit=audit)
    return {
        "attribute_accuracy": scored[
            "mean"
        ],  # an image the audit's validity output rejects is wrong on every attribute
        "attribute_accuracy_valid": scored["mean_valid"],
        "valid_fraction": scored["valid_fraction"],
        "fid": fid_value,
        "diversity": diversity(images, classes, audit.spec.spatial_dims, audit.spec.in_channels)["diversity"],
        # the floor is real vs real at this set's n and class counts (the same for every arm of the split)
        "fid_floor": {"mean": floor["mean"], "sd": floor["sd"]},
        "fid_ratio": fid_value / floor["mean"] if floor["mean"] > 0 else None,
        "kid": {"mean": kid_value["mean"], "ci95": kid_value["ci95"]},
    }


# ---- the benchmark --------------------------------------------------------------------------------
@dataclass
class Reference:
    """One split's reference: the drawn real images, their classes and features, and the split's FID floor."""

    images: list[np.ndarray]
    classes: list[str]
    features: Any
    #: :func:`~medgen_monai.metrics.reference.fid_floor` at the split's request count and class counts
    floor: dict[str, Any]
    #: :meth:`~medgen_monai.metrics.reference.StratifiedReference.summary` of the draw
    sampling: dict[str, Any]
    ids: list[str]


@dataclass
class Evaluation:
    """What every arm of a modality is trained on, asked for and scored against (the same for all arms and seeds)."""

    work: Path
    train_dir: Path
    bank_dir: Path
    requests: dict[str, list[dict[str, Any]]]
    reference: dict[str, Reference]
    audit: Any
    extractor: Any


def draw_reference(
    modality: str,
    split: str,
    test_records: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]],
    cap: int,
) -> Any:
    """A split's reference records: a seeded random draw of at most ``cap`` test records of the split (with or
    without a held-out combination), stratified to the requests' classes and without their source images.

    Returns:
        a :class:`~medgen_monai.metrics.reference.StratifiedReference` (shrunk below ``cap`` when a class is short,
        so the proportions stay the requests').

    Raises:
        ValueError: a requested class has no test record of the split left.
    """
    from medgen_monai.describe import get_task
    from medgen_monai.metrics.reference import request_sources, stratified_reference

    heldout = split == "heldout"
    pool = [r for r in test_records if matches(r["attributes"], HELDOUT[modality]) == heldout]
    drawn = stratified_reference(
        pool,
        [r["category"] for r in requests],
        cap,
        REFERENCE_SEED,
        class_of=get_task(modality).category,
        exclude=request_sources(requests),
        on_short="shrink",
    )
    if drawn.missing:
        raise ValueError(
            f"{modality} {split}: no test phantom of the requested classes {drawn.missing} is left for "
            f"the reference ({drawn.excluded} excluded as the requests' sources); raise --test_cases"
        )
    return drawn


def prepare(modality: str, args: argparse.Namespace) -> Evaluation:
    """The modality's data, banks, requests (``<work>/requests.json``) and references (``<work>/reference.json``).

    Each split's reference is drawn by :func:`draw_reference`, its features are extracted once, and its FID floor
    is computed once at the split's request count and class counts (every arm and seed of the split shares both).
    """
    import torch

    from medgen_monai.data import read_dataset
    from medgen_monai.metrics.audit import load_audit
    from medgen_monai.metrics.evaluation import load_images
    from medgen_monai.metrics.fid import feature_extractor
    from medgen_monai.metrics.reference import fid_floor

    kind, layout, unit = MODALITIES[modality]
    work = Path(args.work_dir) / modality
    train_dir = ensure_dataset(kind, layout, Path(args.data_root) / kind, args.train_cases, TRAIN_SEED)
    test_dir = ensure_dataset(kind, layout, work / "test_data", args.test_cases, TEST_SEED)
    # the shipped bank describes data/<kind> (seed 0); other training data gets its own bank
    shipped = train_dir.resolve() == (ROOT / "data" / kind).resolve()
    bank_dir = bundle_dir(modality) / "bank" if shipped else work / "train_bank"
    bank = ensure_bank(modality, layout, train_dir, bank_dir)
    test_bank = ensure_bank(modality, layout, test_dir, work / "test_bank")
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle_dir(modality) / "configs" / "inference.json"))
    classes = parser.get_parsed_content("classes")
    requests = requests_for(modality, classes, bank, test_bank, args.per_class, args.heldout_cap)
    from medgen_monai.io.atomic import atomic_write_text

    atomic_write_text(work / "requests.json", json.dumps(requests, indent=1) + "\n")  # what every arm was asked for

    test_records = read_dataset(layout, test_dir)
    audit = load_audit(unit)
    extractor = feature_extractor(audit)
    reference: dict[str, Reference] = {}
    for split in SPLITS:
        drawn = draw_reference(modality, split, test_records, requests[split], args.reference_cap)
        if drawn.note:
            print(f"{modality} {split}: reference of {len(drawn)} test phantoms: {drawn.note}", flush=True)
        images = load_images([r["image"] for r in drawn.records])
        with torch.no_grad():
            features = extractor(images)
        counts = Counter(r["category"] for r in requests[split])
        try:  # real vs real at the generated set's n and class counts
            floor = fid_floor(
                features,
                len(requests[split]),
                repeats=FLOOR_REPEATS,
                seed=REFERENCE_SEED,
                labels=drawn.classes,
                counts=counts,
            )
        except ValueError as error:
            taken = {c: v["taken"] for c, v in drawn.per_class.items()}
            raise ValueError(
                f"{modality} {split}: the reference ({len(drawn)} test phantoms, per class {taken}) is "
                f"too small for a FID floor at the {len(requests[split])} requests' class counts "
                f"{dict(counts)}: {error}; raise --test_cases"
            ) from error
        floor["counts"] = dict(sorted(counts.items()))
        reference[split] = Reference(
            images,
            list(drawn.classes),
            features,
            floor,
            drawn.summary(),
            [str(r.get("id", r["image"])) for r in drawn.records],
        )
    # what every arm was compared with
    atomic_write_text(
        work / "reference.json",
        json.dumps(
            {s: [{"id": i, "category": c} for i, c in zip(ref.ids, ref.classes)] for s, ref in reference.items()},
            indent=1,
        )
        + "\n",
    )
    return Evaluation(work, train_dir, bank_dir, requests, reference, audit, extractor)


def plan_modality(
    modality: str, args: argparse.Namespace
) -> tuple[list[ArmTask], Callable[[int, str, Path, float], None]]:
    """The arms of ``modality`` still to train, and the function that generates, scores and records a trained arm."""
    from medgen_monai.metrics.diversity import diversity

    settings = settings_of(args)
    check_settings(Path(args.out), modality, settings)  # before any training, not after the first arm
    ev = prepare(modality, args)
    work, train_dir, bank_dir, requests, reference = ev.work, ev.train_dir, ev.bank_dir, ev.requests, ev.reference
    audit, extractor = ev.audit, ev.extractor
    report: dict[str, Any] = {
        "requests": {s: len(v) for s, v in requests.items()},
        "reference": {},
        "runs": {c: {s: [] for s in SPLITS} for c in CONDITIONS},
    }
    for split in SPLITS:
        ref = reference[split]
        report["reference"][split] = {
            "n": len(ref.images),
            "diversity": diversity(ref.images, ref.classes, audit.spec.spatial_dims, audit.spec.in_channels)[
                "diversity"
            ],
            "fid_floor": ref.floor,
            "sampling": ref.sampling,
            # no longer measured (each run has its fid_floor at the generated n); kept as null for readers of the key
            "fid_split_half": None,
        }
    projection = {"alpha": args.projection_alpha, "k": args.projection_k}
    measured = already_measured(Path(args.out), modality, settings)
    arms = [
        (seed, arm)
        for seed in args.seeds
        for arm in TRAINED
        if not all((seed, c) in measured for c in CONDITIONS if trained_as(c) == arm)
    ]
    if len(arms) < len(args.seeds) * len(TRAINED):
        print(
            f"{modality}: {len(args.seeds) * len(TRAINED) - len(arms)} arm(s) already in {args.out}, not rerun",
            flush=True,
        )

    def evaluate_arm(seed: int, arm: str, weights: Path, seconds: float) -> None:
        for condition in (c for c in CONDITIONS if trained_as(c) == arm):
            for split in SPLITS:
                out_dir = work / condition / f"seed{seed}" / split
                generate(modality, condition, weights, requests[split], out_dir, bank_dir, args.steps, projection)
                scores = score(modality, requests[split], out_dir, reference[split], audit, extractor)
                # train_seconds: the wall time of the worker that trained the weights (the cost of the arm)
                report["runs"][condition][split].append({"seed": seed, **scores, "train_seconds": round(seconds, 1)})
            print(
                f"{modality} {condition} seed {seed}: trained in {seconds:.0f} s "
                + json.dumps({s: report["runs"][condition][s][-1] for s in SPLITS}),
                flush=True,
            )
        # every finished arm lands at once: a session that ends mid-benchmark keeps what it measured
        record(Path(args.out), modality, report, settings)

    tasks = [
        (
            modality,
            arm,
            seed,
            str(work / arm / f"seed{seed}"),
            str(train_dir),
            str(bank_dir),
            args.iterations,
            args.threads,
        )
        for seed, arm in arms
    ]
    return tasks, evaluate_arm


def run_arms(modalities: Sequence[str], args: argparse.Namespace) -> None:
    """Train every arm still missing, of all ``modalities``, and score each as soon as it is trained.

    One pool of ``--jobs`` workers serves all modalities, so no core idles while one modality's last odd arm trains.
    """
    planned = {m: plan_modality(m, args) for m in modalities}
    tasks = [task for m in modalities for task in planned[m][0]]
    if args.jobs <= 1:
        for task in tasks:
            planned[task[0]][1](task[2], task[1], *train_task(task))
        return
    import multiprocessing

    # arms train in parallel worker processes (a fresh interpreter each: spawn), each with --threads threads;
    # this process generates and scores each arm as soon as it is trained (in task order)
    with multiprocessing.get_context("spawn").Pool(args.jobs, maxtasksperchild=1) as pool:
        for task, (weights, seconds) in zip(tasks, pool.imap(train_task, tasks)):
            planned[task[0]][1](task[2], task[1], weights, seconds)


#: settings that change what a number means: runs made with different ones are never merged. ``reference`` is the
#: reference method (:data:`REFERENCE_METHOD`); runs recorded before it was a setting have none, so they count as
#: measured with other settings
COMPARABLE = (
    "iterations",
    "per_class",
    "heldout_cap",
    "reference_cap",
    "steps",
    "projection_alpha",
    "projection_k",
    "train_cases",
    "test_cases",
    "quick",
    "reference",
)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """The :data:`COMPARABLE` settings of a run; ``reference`` is always this script's :data:`REFERENCE_METHOD`."""
    return {k: REFERENCE_METHOD if k == "reference" else getattr(args, k) for k in COMPARABLE}


def check_settings(out: Path, modality: str, settings: Mapping[str, Any]) -> None:
    """Refuse to add runs to a results file whose ``modality`` runs were made with other settings.

    Raises:
        ValueError: naming each setting that differs, as (there, now); a setting missing there reads ``None``
            (e.g. ``reference`` for runs scored against the earlier, class-sorted references).
    """
    runs_path = out.with_name(out.stem + "_runs.json")
    if not runs_path.is_file():
        return
    previous = json.loads(runs_path.read_text())
    before = previous.get("settings", {}).get(modality)
    if before is None or modality not in previous.get("runs", {}):
        return
    differ = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
    if differ:
        raise ValueError(
            f"{runs_path}: the {modality} runs there were made with other settings "
            f"(setting: (there, now)) {differ}; pass another --out, or remove them"
        )


def merge(previous: Mapping[str, Any], report: Mapping[str, Any]) -> dict[str, Any]:
    """One modality's runs: ``report``'s, plus the earlier invocations' runs of seeds ``report`` did not measure."""
    merged = {**previous, **{k: v for k, v in report.items() if k != "runs"}, "runs": {}}
    for condition in CONDITIONS:
        merged["runs"][condition] = {}
        for split in SPLITS:
            new = report["runs"][condition][split]
            seeds = {r["seed"] for r in new}
            old = [r for r in previous.get("runs", {}).get(condition, {}).get(split, []) if r["seed"] not in seeds]
            merged["runs"][condition][split] = sorted(old + new, key=lambda r: r["seed"])
    return merged


def record(out: Path, modality: str, report: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """Merge one modality's runs into the results and rewrite the JSON, the runs file and the plot.

    Seeds and modalities measured by earlier or concurrent invocations are kept (``--seeds 0`` in one session,
    ``--seeds 1,2`` in the next); the read-merge-write happens under a file lock. Runs made with other settings
    (:data:`COMPARABLE`) are refused rather than averaged with these.
    """
    import fcntl

    from medgen_monai.io.atomic import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    runs_path = out.with_name(out.stem + "_runs.json")
    with open(out.with_name(out.stem + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        check_settings(out, modality, settings)
        previous = json.loads(runs_path.read_text()) if runs_path.is_file() else {"settings": {}, "runs": {}}
        all_runs = {**previous["runs"], modality: merge(previous["runs"].get(modality, {}), report)}
        all_settings = {**previous.get("settings", {}), modality: dict(settings)}
        summary = summarise({m: all_runs[m] for m in MODALITIES if m in all_runs})
        atomic_write_text(out, json.dumps(summary, indent=2) + "\n")
        atomic_write_text(
            runs_path,
            json.dumps({"settings": all_settings, "heldout_combinations": HELDOUT, "runs": all_runs}, indent=2) + "\n",
        )
        if summary:
            plot(summary, out.with_suffix(".png"))
    return summary


def summarise(runs: Mapping[str, Any]) -> dict[str, Any]:
    """Mean and sd over seeds per cell, for the modalities where every condition has at least one run."""
    out: dict[str, Any] = {}
    for modality, report in runs.items():
        if not all(report["runs"][c][s] for c in CONDITIONS for s in SPLITS):
            continue
        out[modality] = {}
        for condition in CONDITIONS:
            out[modality][condition] = {}
            for split in SPLITS:
                values = report["runs"][condition][split]
                cell = {m: [v[m] for v in values] for m in METRICS}
                # runs scored against the stratified references also have these (earlier runs do not)
                for m, read in (("fid_ratio", lambda v: v["fid_ratio"]), ("kid", lambda v: v["kid"]["mean"])):
                    if all(v.get(m) is not None for v in values):
                        cell[m] = [read(v) for v in values]
                out[modality][condition][split] = {
                    m: {"mean": float(np.mean(x)), "sd": float(np.std(x, ddof=1)) if len(x) > 1 else 0.0}
                    for m, x in cell.items()
                }
    return out


def metric_grid(rows: int) -> tuple[Any, Any]:
    """A figure with one row of axes per modality and one column per metric (shared by the sweep's plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, len(METRICS), figsize=(4 * len(METRICS), 2.8 * rows), squeeze=False)


def save_grid(fig: Any, axes: Any, path: Path) -> None:
    """Legend on the first axes, then an atomic PNG write."""
    import matplotlib.pyplot as plt

    from medgen_monai.io.atomic import atomic_path

    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def plot(summary: Mapping[str, Any], path: Path) -> None:
    modalities = list(summary)
    fig, axes = metric_grid(len(modalities))
    x = np.arange(len(SPLITS))
    width = 0.8 / len(CONDITIONS)
    for row, modality in enumerate(modalities):
        for col, metric in enumerate(METRICS):
            ax = axes[row][col]
            for k, condition in enumerate(CONDITIONS):
                cell = [summary[modality][condition][s][metric] for s in SPLITS]
                ax.bar(
                    x + (k - 1.5) * width,
                    [c["mean"] for c in cell],
                    width,
                    yerr=[c["sd"] for c in cell],
                    label=condition,
                    capsize=2,
                )
            ax.set_xticks(x, SPLITS)
            ax.set_title(f"{modality}: {metric}")
    save_grid(fig, axes, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modalities", default="derm,colon,cxr")
    parser.add_argument("--seeds", default="0,1,2")
    # 600 iterations drew noise that did not depend on the class (a derm probe); 2500, the demo budget, draws images
    parser.add_argument("--iterations", type=int, default=2500, help="training iterations of every arm (batch 32)")
    parser.add_argument("--per_class", type=int, default=8, help="seen-split requests per class")
    parser.add_argument("--heldout_cap", type=int, default=48, help="at most this many held-out requests")
    parser.add_argument(
        "--reference_cap",
        type=int,
        default=400,
        help="at most this many reference images per split (a random draw in the requests' class proportions)",
    )
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps")
    parser.add_argument("--projection_alpha", type=float, default=0.5)
    parser.add_argument("--projection_k", type=int, default=8)
    parser.add_argument("--train_cases", type=int, default=5000)
    # held-out combinations are 2-10% of the phantoms: the held-out split needs its requests plus a reference of at
    # least twice their class counts (the FID floor), without the requests' own images (cxr at 1500: 42 in all)
    parser.add_argument("--test_cases", type=int, default=10000)
    parser.add_argument("--data_root", default=str(ROOT / "data"))
    parser.add_argument("--work_dir", default=str(ROOT / "runs" / "vap_ablation"))
    parser.add_argument("--out", default=str(RESULTS / "vap_ablation.json"))
    parser.add_argument("--jobs", type=int, default=1, help="arms trained at once, in worker processes")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per arm (default: cores / jobs)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 iterations, 2 steps, tiny sets")
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in str(args.seeds).split(",")]
    if args.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {args.jobs}")
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.quick:  # a smoke run in its own folders: it never touches data/ or the committed results
        args.iterations, args.steps, args.per_class, args.heldout_cap = 2, 2, 2, 4
        args.train_cases, args.test_cases, args.reference_cap = 150, 300, 40
        args.work_dir = str(Path(args.work_dir).with_name(Path(args.work_dir).name + "_quick"))
        args.data_root = str(Path(args.work_dir) / "data")
        args.out = str(Path(args.work_dir) / "vap_ablation.json")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for modality in args.modalities.split(","):
        if modality not in MODALITIES:
            raise ValueError(f"--modalities: unknown {modality!r}; expected some of {list(MODALITIES)}")
    run_arms(args.modalities.split(","), args)
    summary = json.loads(Path(args.out).read_text())
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
