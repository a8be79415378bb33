"""Fill the generated parts of the docs from the code and the shipped results:

* docs/phantoms.md: vocabulary tables, an example text per kind, a figure per kind
  (docs/images/phantoms_<kind>.png) and the README gallery;
* docs/audit.md: the held-out accuracy table of the shipped audit networks (read from
  medgen_monai/metrics/weights/audit_<unit>.json, written by ``medgen-monai train-audit``) and
  their bar plots (docs/images/audit_<unit>.png);
* docs/engine.md: the benchmark tables, read from benchmarks/results/{sampling,phantoms}.json
  (written by ``python benchmarks/sampling.py`` and ``python benchmarks/phantoms.py``);
* docs/dicom.md: dciodvfy's warnings on every kind of DICOM file the project writes;
* docs/audit.md also: the validity table and the dataset seed table;
* docs/quality.md and each bundle's docs/README.md: quality per sampler setting, read from
  benchmarks/results/quality.json (written by ``python benchmarks/quality.py``);
* docs/results.md: the VAP-Diffusion ablation table, read from benchmarks/results/vap_ablation.json and
  vap_ablation_runs.json (written by ``python benchmarks/vap_ablation.py``), and the projection sweep's table, read
  from vap_projection_sweep.json (written by ``python benchmarks/vap_projection_sweep.py``).

    python docs/build_docs.py            # rewrite tables and figures
    python docs/build_docs.py --check    # exit 1 if a table is stale (tests run this)

Generated blocks sit between ``<!-- generated:NAME -->`` and ``<!-- /generated:NAME -->``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medgen_monai.engines import shipped_bundles
from medgen_monai.phantoms import KINDS, get_phantom

DOCS = Path(__file__).parent
PAGE = DOCS / "phantoms.md"
AUDIT_PAGE = DOCS / "audit.md"
RESULTS_PAGE = DOCS / "results.md"
ENGINE_PAGE = DOCS / "engine.md"
MEDCODI_PAGE = DOCS / "medcodi.md"
CCELLA_PAGE = DOCS / "ccella.md"
DICOM_PAGE = DOCS / "dicom.md"
QUALITY_PAGE = DOCS / "quality.md"
RESULTS = DOCS.parent / "benchmarks" / "results"
IMAGES = DOCS / "images"
FIGURE_SEED = 0
FIGURE_CASES = 8


def block(kind: str) -> str:
    phantom = get_phantom(kind)
    vocab = phantom.vocabulary()
    lines = [
        f"Classes ({'multi-label' if vocab['multilabel'] else 'one per case'}): "
        + ", ".join(f"`{c}`" for c in vocab["classes"]),
        "",
        f"Views: {', '.join(vocab['views'])}; default size {'x'.join(map(str, phantom.default_size))}.",
        "",
        "| attribute | values | visible in | meaning |",
        "|---|---|---|---|",
    ]
    for name, a in vocab["attributes"].items():
        lines.append(
            f"| `{name}` | {', '.join(f'`{v}`' for v in a['values'])} | {', '.join(a['views'])} | {a['doc']} |"
        )
    sample = phantom.generate(0, seed=FIGURE_SEED)
    text = sample.text.strip() or "(empty report)"
    lines += [
        "",
        f"Example (`get_phantom('{kind}').generate(0, seed={FIGURE_SEED})`), label `{sample.label}`:",
        "",
        "> " + text.replace("\n", "\n> "),
        "",
        f"![{kind} phantoms](images/phantoms_{kind}.png)",
    ]
    return "\n".join(lines)


def audit_reports() -> dict[str, dict]:
    from medgen_monai.metrics.audit import WEIGHTS_DIR, audit_units

    reports = {}
    for unit in audit_units():
        path = WEIGHTS_DIR / f"audit_{unit}.json"
        if not path.is_file():
            raise ValueError(f"{path}: missing; train it with `medgen-monai train-audit --kind {unit.split('_')[0]}`")
        reports[unit] = json.loads(path.read_text())
    return reports


def audit_block() -> str:
    """Held-out accuracy and calibration per unit and head, with the data sizes, seconds and the command that
    trained it."""
    lines = [
        "| unit | head | accuracy | balanced accuracy | ECE before | ECE after | temperature | held-out cases |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reports = audit_reports()
    for unit, report in reports.items():
        for head, accuracy in report["accuracy"].items():
            lines.append(
                f"| `{unit}` | `{head}` | {accuracy:.3f} | {report['balanced_accuracy'][head]:.3f} | "
                f"{report['ece_uncalibrated'][head]:.3f} | {report['ece'][head]:.3f} | "
                f"{report['temperature'][head]:.2f} | "
                f"{report['n_val']} |"
            )
    lines += [
        "",
        "| unit | min attribute accuracy | parameters | weights | training cases x epochs | training time (s) "
        "| trained by |",
        "|---|---|---|---|---|---|---|",
    ]
    for unit, report in reports.items():
        args = report["arguments"]
        lines.append(
            f"| `{unit}` | {min(a for h, a in report['accuracy'].items() if not h.startswith('label')):.3f} | "
            f"{report['architecture']['parameters']:,} | "
            f"{report['weights_bytes'] / 1e6:.2f} MB | {report['n_train']} x {args['epochs']} | "
            f"{report['training_seconds']:.0f} | `medgen-monai train-audit --kind {report['kind']}` |"
        )
    lines += [""] + [f"![audit {unit}](images/audit_{unit}.png)" for unit in reports]
    return "\n".join(lines)


def validity_block() -> str:
    """Held-out validity per unit: real phantoms accepted, each negative family rejected, confidence on negatives."""
    from medgen_monai.metrics.negatives import NEGATIVE_FAMILIES

    reports = audit_reports()
    lines = [
        "| unit | real passed | "
        + " | ".join(f"{f} rejected" for f in NEGATIVE_FAMILIES)
        + " | autoencoder reconstructions passed |",
        "|---" * (len(NEGATIVE_FAMILIES) + 3) + "|",
    ]
    for unit, report in reports.items():
        v = report["validity"]
        cells = [f"{v['rejected'][f]:.3f}" if f in v["rejected"] else "n/a" for f in NEGATIVE_FAMILIES]
        recon = v.get("autoencoder_reconstruction_pass")
        lines.append(
            f"| `{unit}` | {v['real_pass']:.3f} ({v['n_real']}) | "
            + " | ".join(cells)
            + f" | {'n/a' if recon is None else f'{recon:.3f}'} |"
        )
    n = {r["validity"]["n_per_family"] for r in reports.values()}
    lines += [
        "",
        f"Negatives per family: {', '.join(map(str, sorted(n)))}. Largest calibrated head confidence on "
        "negatives (mean over images of the largest `P(valid) x max softmax` over heads):",
        "",
        "| unit | " + " | ".join(NEGATIVE_FAMILIES) + " |",
        "|---" * (len(NEGATIVE_FAMILIES) + 1) + "|",
    ]
    for unit, report in reports.items():
        confidence = report["validity"]["max_confidence"]
        lines.append(
            f"| `{unit}` | "
            + " | ".join(f"{confidence[f]:.3f}" if f in confidence else "n/a" for f in NEGATIVE_FAMILIES)
            + " |"
        )
    return "\n".join(lines)


def seeds_block() -> str:
    """Every dataset seed range and what uses it (medgen_monai/phantoms/seeds.py)."""
    from medgen_monai.phantoms.seeds import AUDIT_SEEDS, CCELLA_SEEDS, MEDCODI_SEEDS, QUALITY_SEEDS, SEED_RANGES

    named = {"audit": AUDIT_SEEDS, "quality": QUALITY_SEEDS, "ccella": CCELLA_SEEDS, "medcodi": MEDCODI_SEEDS}
    lines = ["| range | seeds | used by | named seeds |", "|---|---|---|---|"]
    for name, (first, last, use) in SEED_RANGES.items():
        seeds = ", ".join(f"{k} {v}" for k, v in named.get(name, {}).items()) or "-"
        lines.append(f"| `{name}` | {first}-{last} | {use} | {seeds} |")
    return "\n".join(lines)


def _result(name: str) -> dict:
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"{path}: missing; run python benchmarks/{name}.py")
    return json.loads(path.read_text())


def sampling_block() -> str:
    """The sampling benchmark: each setting's speed and quality against MONAI's 1000-step inferer on the same
    requests, the speedup with its equal-quality verdict, the sampler's overhead, training throughput, 3D memory."""
    r = _result("sampling")
    m = r["machine"]
    if "speedup" not in r:  # the format before the equal-quality rule: its figures are not comparable
        return "Not measured in the current format yet: run `python benchmarks/sampling.py`."
    lines = [
        f"Measured by `{r['command']}` on {m['cpu_count']} CPU cores, {m['torch_threads']} torch threads, torch "
        f"{m['torch']} (`benchmarks/results/sampling.json`): `{r['bundle']}`, the same {r['n']} requests (class and "
        "seed) for every row, scored by `benchmarks/quality.py`'s code.",
        "",
        "| setting | implementation | steps | seconds / image | valid | class accuracy | FID / floor | KID "
        "| diversity (real) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["settings"]:
        name = row["setting"] + (" (shipped default)" if row["default"] else "")
        lines.append(
            f"| {name} | {row['implementation']} | {row['steps']} | {row['seconds_per_image']:.3f} | "
            f"{row['valid_fraction']:.3f} | {row['class_accuracy']:.3f} | {row['fid_ratio']:.2f}x | "
            f"{row['kid']['mean']:.4f} | {row['diversity']:.3f} ({row['diversity_real']:.3f}) |"
        )
    speed, over, train = r["speedup"], r["overhead"], r["training"]
    verdict = "equal quality" if speed["equal_quality"] else "**not** equal quality"
    lines += [
        "",
        "| figure | value | target |",
        "|---|---|---|",
        f"| speedup: {speed['setting']} vs MONAI `LatentDiffusionInferer.sample` ({speed['baseline']}), {verdict} "
        f"({speed['rule']}) | {speed['ratio']:.1f}x | >= {speed['target']:g} at equal quality |",
        f"| `overhead_ratio` (sampler wall time / {over['steps']} U-Net forwards at batch 2x{over['batch']}) | "
        f"{over['overhead_ratio']:.3f} | <= 1.10 |",
        f"| `training_throughput_ratio` (LatentDiffusionTrainer / plain PyTorch loop, batch {train['batch']}) | "
        f"{train['training_throughput_ratio']:.3f} | ~1 |",
    ]
    for row in r.get("memory_3d", []):
        size = "x".join(map(str, row["size"]))
        lines.append(
            f"| peak resident memory, 3D sampling at {size} (decode: {row['decode_roi_latent']}) | "
            f"{row['peak_rss_mib']:.0f} MiB | recorded |"
        )
    lines += ["", "![sampling benchmark](../benchmarks/results/sampling.png)"]
    return "\n".join(lines)


def phantoms_block() -> str:
    r = _result("phantoms")
    lines = [
        "Measured by `python benchmarks/phantoms.py` (`benchmarks/results/phantoms.json`).",
        "",
        "| kind | size | generated / s | target |",
        "|---|---|---|---|",
    ]
    for kind, row in r["kinds"].items():
        lines.append(
            f"| {kind} | {'x'.join(map(str, row['size']))} | {row['generate_per_s']:.0f} | "
            f"{row['target_generate_per_s']:.0f} |"
        )
    return "\n".join(lines)


def vap_ablation_block() -> str:
    """The VAP-Diffusion ablation: mean +- sd over training seeds per modality, condition, split and metric, from the
    runs file (so a modality still being measured shows what it has; the summary JSON holds only complete ones)."""

    path = RESULTS / "vap_ablation_runs.json"
    if not path.is_file():
        return "Not measured yet: run `python benchmarks/vap_ablation.py`."
    details = _result("vap_ablation_runs")
    summary = json.loads((RESULTS / "vap_ablation.json").read_text())
    metrics = ("attribute_accuracy", "fid", "diversity")
    lines = []
    for modality, report in details["runs"].items():
        settings = details["settings"][modality]
        # merged over invocations: a condition may hold more seeds than another while a modality is being measured
        seeds = {c: sorted({r["seed"] for r in runs["seen"]}) for c, runs in report["runs"].items()}
        if len({tuple(v) for v in seeds.values()}) == 1:
            only = next(iter(seeds.values()))
            seed_text = f"{len(only)} training seed{'s' if len(only) != 1 else ''} ({', '.join(map(str, only))})"
        else:
            seed_text = "training seeds " + "; ".join(
                f"{c}: {', '.join(map(str, v)) or 'none yet'}" for c, v in seeds.items()
            )
        state = "" if modality in summary else " (incomplete: not yet in benchmarks/results/vap_ablation.json)"
        lines += [
            f"**{modality}**{state}: {seed_text}, "
            f"{settings['iterations']} iterations of 32 per arm, {settings['steps']} DDIM steps, "
            f"{report['requests']['seen']} seen / {report['requests']['heldout']} held-out requests; held out: "
            + "; ".join(", ".join(f"{k}={v}" for k, v in c.items()) for c in details["heldout_combinations"][modality])
            + ".",
            "",
            "| condition | split | attribute accuracy | FID (audit features) | diversity (1 - MS-SSIM) |",
            "|---|---|---|---|---|",
        ]
        for condition, splits in report["runs"].items():
            for split, runs in splits.items():
                if not runs:
                    lines.append(f"| {condition} | {split} | not measured yet | | |")
                    continue
                cells = []
                for m in metrics:
                    values = [r[m] for r in runs]
                    sd = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                    cells.append(
                        f"{float(np.mean(values)):.3f} ± {sd:.3f}" if len(values) > 1 else f"{values[0]:.3f} (one seed)"
                    )
                lines.append(f"| {condition} | {split} | " + " | ".join(cells) + " |")
        for split, ref in report["reference"].items():
            if ref.get("fid_floor"):  # runs from the stratified-v2 references: the floor at the generated n
                floor = f"{ref['fid_floor']['mean']:.3f} ± {ref['fid_floor']['sd']:.3f} (floor at the generated n)"
            else:
                floor = ("-" if ref["fid_split_half"] is None else f"{ref['fid_split_half']:.3f}") + " (split half)"
            lines.append(f"| real test phantoms | {split} (n={ref['n']}) | - | {floor} | {ref['diversity']:.3f} |")
        lines += ["", *paired_differences(modality, report["runs"], metrics), ""]
    if (RESULTS / "vap_ablation.png").is_file():
        lines.append("![VAP ablation](../benchmarks/results/vap_ablation.png)")
    return "\n".join(lines)


def paired_differences(modality: str, runs: dict, metrics: Sequence[str]) -> list[str]:
    """Per-seed differences between each condition and the one before it, in seed order.

    The arms of one seed share initialisation, data order and sampling noise, so these paired differences say more
    than the overlap of two means with their sds; the written readings of docs/results.md cite them.
    """
    lines = [
        f"Paired by seed ({modality}): each condition minus the one before it, one value per seed in seed order "
        "(higher attribute accuracy and diversity, lower FID are better).",
        "",
        "| condition - baseline | split | seeds | attribute accuracy | FID (audit features) "
        "| diversity (1 - MS-SSIM) |",
        "|---|---|---|---|---|---|",
    ]
    conditions = list(runs)  # in the ablation's order: each adds one thing to the one before it
    for baseline, condition in zip(conditions, conditions[1:]):
        for split in runs[condition]:
            ours = {r["seed"]: r for r in runs[condition][split]}
            theirs = {r["seed"]: r for r in runs[baseline].get(split, [])}
            seeds = sorted(set(ours) & set(theirs))
            if not seeds:
                continue
            cells = [
                ", ".join(f"{ours[s][m] - theirs[s][m]:+.{1 if m == 'fid' else 3}f}" for s in seeds) for m in metrics
            ]
            lines.append(
                f"| {condition} - {baseline} | {split} | {', '.join(map(str, seeds))} | " + " | ".join(cells) + " |"
            )
    return lines


def vap_projection_sweep_block() -> str:
    """The kNN projection's alpha sweep on the ablation's prototype weights: mean +- sd over seeds per alpha and
    split."""
    path = RESULTS / "vap_projection_sweep.json"
    if not path.is_file():
        return "Not measured yet: run `python benchmarks/vap_projection_sweep.py` after the ablation."
    result = _result("vap_projection_sweep")
    lines = []
    for modality, alphas in result["summary"].items():
        runs = result["runs"][modality]
        seeds = sorted({r["seed"] for cell in runs.values() for r in cell["seen"]})
        checks = [
            r["reproduces_ablation"]
            for cell in runs.values()
            for rows in cell.values()
            for r in rows
            if r["reproduces_ablation"] is not None
        ]
        check = (
            f"{sum(checks)} of {len(checks)} reproductions of the ablation's own numbers (alpha 0 and "
            f"{result['settings'][modality]['projection_alpha']:g}) exact"
            if checks
            else "no ablation numbers to reproduce"
        )
        lines += [
            f"**{modality}**: the `description_prototype` weights of training seed{'s' if len(seeds) != 1 else ''} "
            f"{', '.join(map(str, seeds))}, k = {result['settings'][modality]['projection_k']}; {check}.",
            "",
            "| projection_alpha | split | seeds | attribute accuracy | FID (audit features) "
            "| diversity (1 - MS-SSIM) |",
            "|---|---|---|---|---|---|",
        ]
        for alpha, splits in alphas.items():
            for split, metrics in splits.items():
                cells = [
                    f"{v['mean']:.3f} ± {v['sd']:.3f}" if v["n"] > 1 else f"{v['mean']:.3f}" for v in metrics.values()
                ]
                lines.append(f"| {alpha} | {split} | {next(iter(metrics.values()))['n']} | " + " | ".join(cells) + " |")
        lines.append("")
    if (RESULTS / "vap_projection_sweep.png").is_file():
        lines.append("![projection sweep](../benchmarks/results/vap_projection_sweep.png)")
    return "\n".join(lines)


def dicom_validation_block() -> str:
    """dciodvfy's warnings on one file of every kind the project writes (errors: none, or this raises)."""
    import tempfile

    from medgen_monai.io.dicom import dciodvfy, write_examples

    lines = ["| file | dciodvfy errors | dciodvfy warnings |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as folder:
        for kind, path in write_examples(folder).items():
            report = dciodvfy(path)
            if report.errors:
                raise ValueError(f"dciodvfy errors on the {kind} example: {report.errors}")
            warnings = "<br>".join(f"`{w}`" for w in dict.fromkeys(report.warnings)) or "none"
            lines.append(f"| {kind} | 0 | {warnings} |")
    return "\n".join(lines)


#: how the quality checks (benchmarks/quality.py, check_sets) are named in the docs.
CHECK_NAMES = {
    "real_requested": "fresh phantoms with the requested attributes (a perfect generator)",
    "real_wrong_class": "real images of another class",
    "gaussian_noise": "Gaussian noise",
    "blank": "blank (constant) images",
}
#: the quality gate: what a bundle's default setting must reach to ship as "done" (docs/quality.md).
GATE = {"valid_fraction": 0.95, "fid_ratio": 2.0, "diversity_gap": 0.15, "gap_recovered": 0.5, "class_accuracy": 0.9}


def gate_failures(setting: dict, descriptions: bool) -> list[str]:
    """The quality-gate conditions ``setting`` (one entry of quality.json) fails. ``descriptions``: the requests carry
    attributes (a description or a report), judged by the gap recovered; otherwise by the class read back."""
    failures = []
    if setting["valid_fraction"] < GATE["valid_fraction"]:
        failures.append(f"valid {setting['valid_fraction']:.2f} < {GATE['valid_fraction']}")
    if setting["fid_ratio"] is None or setting["fid_ratio"] > GATE["fid_ratio"]:
        failures.append(f"FID {setting['fid_ratio'] or float('nan'):.1f}x floor > {GATE['fid_ratio']:g}x")
    gap = abs(setting["diversity"] - setting["diversity_real"]) / setting["diversity_real"]
    if gap > GATE["diversity_gap"]:
        failures.append(f"diversity {gap:+.0%} off real")
    if descriptions and (setting["gap_recovered"] is None or setting["gap_recovered"] < GATE["gap_recovered"]):
        failures.append(
            f"gap recovered {setting['gap_recovered'] if setting['gap_recovered'] is not None else float('nan'):.2f} "
            f"< {GATE['gap_recovered']}"
        )
    if not descriptions and setting["class_accuracy"] < GATE["class_accuracy"] * setting["class_accuracy_ceiling"]:
        failures.append(
            f"class accuracy {setting['class_accuracy']:.2f} < {GATE['class_accuracy']:g}x real "
            f"{setting['class_accuracy_ceiling']:.2f}"
        )
    return failures


def quality_block() -> str:
    """docs/quality.md: per bundle, every sampler setting's scores against its ceilings, the gate, the contact sheet."""
    r = _result("quality")
    m = r["machine"]
    lines = [
        f"Measured by `python benchmarks/quality.py` ({m['cpu_count']} CPU cores, torch {m['torch']}; each bundle's "
        "command below): `benchmarks/results/quality.json`.",
        "",
    ]
    for name, bundle in sorted(r["bundles"].items()):
        kind = (
            "description-conditioned"
            if bundle["descriptions"]
            else "report-conditioned"
            if bundle.get("reports")
            else "class-conditioned"
        )
        lines += [
            f"### `{name}`",
            "",
            f"{kind}, audit unit `{bundle['unit']}`, guidance {bundle['guidance_scale']}, shipped default "
            f"**`{bundle['default']}`**; measured by `{bundle.get('command', r.get('command'))}`.",
            "",
            "| setting | n | s / image | valid | accuracy | accuracy (valid only) | ceiling | label-only "
            "| gap recovered | autoencoder ceiling | class accuracy (real) | FID | floor (mean ± sd) | FID / floor "
            "| KID (95% interval) | diversity | real diversity | gate |",
            "|---" * 18 + "|",
        ]
        for setting_name, st in bundle["settings"].items():
            failures = gate_failures(st, bundle["descriptions"] or bundle.get("reports", False))
            label = f"**{setting_name}** (default)" if setting_name == bundle["default"] else setting_name

            def number(value, digits=3):
                return "n/a" if value is None or value != value else f"{value:.{digits}f}"

            lines.append(
                f"| {label} | {st['n']} | {number(st['seconds_per_image'], 2)} | {st['valid_fraction']:.3f} | "
                f"{st['attribute_accuracy']:.3f} | {number(st['attribute_accuracy_valid'])} | {st['ceiling']:.3f} | "
                f"{st['label_only']:.3f} | {number(st['gap_recovered'], 2)} | {number(st['autoencoder_ceiling'])} | "
                f"{st['class_accuracy']:.3f} ({st['class_accuracy_ceiling']:.3f}) | {st['fid']:.1f} | "
                f"{st['fid_floor']['mean']:.1f} ± {st['fid_floor']['sd']:.1f} | {number(st['fid_ratio'], 2)} | "
                f"{st['kid']['mean']:.3f} ({st['kid']['ci95'][0]:.3f}, {st['kid']['ci95'][1]:.3f}) | "
                f"{st['diversity']:.3f} | "
                f"{st['diversity_real']:.3f} | {'pass' if not failures else 'fails: ' + '; '.join(failures)} |"
            )
        checks = bundle.get("checks", {})
        if checks:
            lines += [
                "",
                "The same scoring on stand-ins whose answer is known (no generator involved):",
                "",
                "| stand-in | valid | accuracy | gap recovered | class accuracy | FID / floor | diversity |",
                "|---|---|---|---|---|---|---|",
            ]
            for check, st in checks.items():
                gap = "n/a" if st["gap_recovered"] is None else f"{st['gap_recovered']:.2f}"
                ratio = "n/a" if st["fid_ratio"] is None else f"{st['fid_ratio']:.2f}"
                lines.append(
                    f"| {CHECK_NAMES.get(check, check)} | {st['valid_fraction']:.3f} | "
                    f"{st['attribute_accuracy']:.3f} | "
                    f"{gap} | {st['class_accuracy']:.3f} | {ratio} | {st['diversity']:.3f} |"
                )
        lines += ["", f"![{name}: real images, then generated, per class](images/quality_{name}.png)", ""]
    return "\n".join(lines).rstrip()


def autoencoders_block() -> str:
    """docs/quality.md: what each bundle's autoencoder keeps of every attribute (benchmarks/autoencoders.py)."""
    r = _result("autoencoders")
    lines = [
        f"Measured by `{next(iter(r['bundles'].values()))['command']}` ({r['machine']['cpu_count']} CPU cores): "
        "fresh phantoms and their reconstructions read by the bundle's audit network; kept = reconstruction "
        f"accuracy / real accuracy, the target is >= {r['keep']} on every attribute. "
        "`benchmarks/results/autoencoders.json`.",
        "",
        "| bundle | n | valid: real / reconstructed | mean accuracy: real -> reconstructed | kept per attribute | "
        "FID of reconstructions / of real images | passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, b in sorted(r["bundles"].items()):
        kept = ", ".join(f"{h} {v['kept']:.2f}" for h, v in b["per_attribute"].items())
        verdict = "yes" if b["passes"] else "no: " + ", ".join(b["failing"])
        lines.append(
            f"| `{name}` | {b['n']} | {b['real_valid']:.3f} / {b['autoencoder_valid']:.3f} | "
            f"{b['real_mean']:.3f} -> {b['autoencoder_mean']:.3f} | {kept} | "
            f"{b['fid_reconstructed']:.1f} / {b['fid_real']:.1f} = {b['fid_ratio']:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def bundle_quality_block(name: str) -> str:
    """A bundle README's summary of quality.json: one row per sampler setting (the README must stand alone)."""
    bundle = _result("quality")["bundles"].get(name)
    if bundle is None:
        raise ValueError(f"benchmarks/results/quality.json has no bundle {name!r}; run python benchmarks/quality.py")
    lines = [
        "| setting | valid | attribute accuracy (valid only) | ceiling / label-only | FID / real floor "
        "| diversity (real) | quality gate |",
        "|---|---|---|---|---|---|---|",
    ]
    for setting_name, st in bundle["settings"].items():
        failures = gate_failures(st, bundle["descriptions"] or bundle.get("reports", False))
        label = f"**{setting_name}** (shipped default)" if setting_name == bundle["default"] else setting_name
        valid_only = (
            "n/a"
            if st["attribute_accuracy_valid"] != st["attribute_accuracy_valid"]
            else f"{st['attribute_accuracy_valid']:.3f}"
        )
        ratio = "n/a" if st["fid_ratio"] is None else f"{st['fid_ratio']:.1f}"
        lines.append(
            f"| {label} | {st['valid_fraction']:.3f} | {st['attribute_accuracy']:.3f} ({valid_only}) | "
            f"{st['ceiling']:.3f} / {st['label_only']:.3f} | {ratio} | "
            f"{st['diversity']:.3f} ({st['diversity_real']:.3f}) | "
            f"{'pass' if not failures else 'fails: ' + '; '.join(failures)} |"
        )
    lines += [
        "",
        "`ddimK_etaE`: DDIM with K steps and stochasticity eta (0: deterministic); `rflowK`: rectified flow with K "
        "Euler steps (deterministic). The gate asks for valid >= 0.95, "
        "FID <= 2x its real-vs-real floor at the same size, diversity within 15% of the real images'"
        + (
            ", and at least half of the accuracy gap between a perfect label-only generator and the ceiling recovered."
            if bundle["descriptions"] or bundle.get("reports")
            else ", and class accuracy at least 0.9 of the real images'."
        ),
    ]
    return "\n".join(lines)


def bundle_training_block(name: str) -> str:
    """A bundle README's record of how its shipped weights were trained (read from the weights files)."""
    from medgen_monai.io.weights import load_weights

    root = DOCS.parent / "bundles" / name
    lines = ["| stage | iterations | training wall time | CPU threads | device |", "|---|---|---|---|---|"]
    for stage in ("autoencoder", "diffusion"):
        extra = load_weights(root / "models" / f"{stage}.pt", role=stage)
        if "train_seconds" not in extra:
            lines.append(
                f"| {stage} | not recorded | not recorded (trained before the weights kept their record) | | |"
            )
            continue
        lines.append(
            f"| {stage} | {extra['iterations']} | {extra['train_seconds'] / 60:.0f} min | {extra['threads']} | "
            f"{extra['device']} |"
        )
    lines += [
        "",
        "Read from the `extra` record of `models/autoencoder.pt` and `models/diffusion.pt`, which the training "
        "run writes (wall time summed over resumed runs).",
    ]
    return "\n".join(lines)


def sampling_diagnostics_block() -> str:
    """docs/engine.md: per bundle, how the latent and the predicted clean latent evolve, and the loss at high noise."""
    r = _result("sampling_diagnostics")
    lines = [
        f"Measured by `{r['command'].strip()}` (`benchmarks/results/sampling_diagnostics.json`, "
        "`sampling_diagnostics.png`).",
        "",
        "| bundle | sampling | final latent std | predicted clean latent std: first step / middle / last | "
        "noise prediction RMS: first / last | conditional vs unconditional RMS gap (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for name, b in r["bundles"].items():
        for setting, tr in b["sampling"].items():
            mid = len(tr["x0_std"]) // 2
            gap = (
                float(np.mean(np.abs(np.subtract(tr["eps_rms_conditional"], tr["eps_rms_unconditional"]))))
                if tr["eps_rms_conditional"]
                else float("nan")
            )
            label = (
                f"DDIM {setting.replace('eta', 'eta ')}"
                if b.get("sampler", "ddim") == "ddim"
                else f"{b['sampler']} ({b['steps']} steps)"
            )
            lines.append(
                f"| `{name}` | {label} | {tr['x_final_std'][0]:.2f} | "
                f"{tr['x0_std'][0]:.2f} / {tr['x0_std'][mid]:.2f} / {tr['x0_std'][-1]:.2f} | "
                f"{tr['eps_rms'][0]:.3f} / {tr['eps_rms'][-1]:.3f} | {gap:.4f} |"
            )
    lines += [
        "",
        "Real latents (training-seed phantoms through each bundle's autoencoder, times its scale factor) and "
        "the denoising loss at the noisiest timesteps against what predicting `eps = x_t` would score "
        "(`a_t var(x0)`, the trivial bound):",
        "",
        "| bundle | real latent std | per-channel std | loss at t = 900 / 950 / 999 | trivial bound at t = 999 | "
        "conditional / unconditional loss at t = 200 |",
        "|---|---|---|---|---|---|",
    ]
    for name, b in r["bundles"].items():
        rows = {row["t"]: row for row in b["per_timestep"]}
        bound = "n/a" if b["alpha_bar_999"] is None else f"{b['alpha_bar_999'] * b['real_latent_std'] ** 2:.5f}"
        lines.append(
            f"| `{name}` | {b['real_latent_std']:.2f} | "
            f"{', '.join(f'{c:.2f}' for c in b['real_latent_channel_std'])} | "
            f"{rows[900]['loss_conditional']:.4f} / {rows[950]['loss_conditional']:.4f} / "
            f"{rows[999]['loss_conditional']:.4f} | {bound} | "
            f"{rows[200]['loss_conditional']:.4f} / {rows[200]['loss_unconditional']:.4f} |"
        )
    lines += ["", "![sampling diagnostics](../benchmarks/results/sampling_diagnostics.png)"]
    return "\n".join(lines)


def recipes_block() -> str:
    """docs/engine.md: the training-recipe pilots, recipe x iterations -> quality.py's metrics at the recipe's sampler,
    and the autoencoder pilots -> what each keeps of the attributes."""
    r = _result("recipes")
    diffusion, autoencoder = [], []
    for recipe, per_bundle in r["recipes"].items():
        for name, entry in per_bundle.items():
            label = recipe if "autoencoder_recipe" not in entry else f"{recipe} (on {entry['autoencoder_recipe']})"
            for p in entry["points"].values():
                (autoencoder if p.get("stage") == "autoencoder" else diffusion).append(
                    (name, p["iterations"], label, p)
                )
    lines = [
        f"Measured by `python benchmarks/recipes.py` ({r['machine']['cpu_count']} CPU cores, one training thread per "
        "run, each row's command in `benchmarks/results/recipes.json`; `recipes.png`). Each row trains one stage of "
        "a copy of the bundle from scratch with the recipe's config overrides; minutes are the trainer's own wall "
        "time (runs shared the two cores).",
        "",
    ]
    if diffusion:
        lines += [
            f'Diffusion recipes on the shipped autoencoder (or, where the recipe says "on", on the autoencoder '
            "an autoencoder recipe below trained), scored by the code of `benchmarks/quality.py` at the "
            f"recipe's sampler, n = {r['n']} images per point (ranking only: the FID floor is wide at this n and "
            "the ratio shrinks toward 1; the finalists are scored again at the gate's n):",
            "",
            "| bundle | recipe | sampler | iterations | minutes | n | valid | attribute accuracy | gap recovered | "
            "FID / floor | diversity (real) | gate |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, iterations, recipe, p in sorted(
            diffusion, key=lambda row: (row[0], row[1], row[3].get("n", r["n"]), row[2])
        ):
            gap = "n/a" if p["gap_recovered"] is None else f"{p['gap_recovered']:.2f}"
            gate = "passes" if not p["gate_failures"] else "; ".join(p["gate_failures"])
            lines.append(
                f"| `{name}` | {recipe} | {p['setting']} | {iterations} | {p['train_seconds'] / 60:.0f} | "
                f"{p.get('n', r['n'])} | "
                f"{p['valid_fraction']:.3f} | {p['attribute_accuracy']:.3f} | {gap} | {p['fid_ratio']:.2f} | "
                f"{p['diversity']:.3f} ({p['diversity_real']:.3f}) | {gate} |"
            )
        lines += ["", "![recipes](../benchmarks/results/recipes.png)", ""]
    if autoencoder:
        lines += [
            "Autoencoder recipes, scored by `benchmarks/autoencoders.py`'s measurement (real phantoms and their "
            "reconstructions read by the audit; kept = reconstruction accuracy / real accuracy):",
            "",
            "| bundle | recipe | iterations | minutes | L1 | mean accuracy real -> reconstructed | lowest kept | "
            "FID of reconstructions / real (n/a: measured before this column) | passes (>= 0.95 on every attribute) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, iterations, recipe, p in sorted(autoencoder, key=lambda row: (row[0], row[1], row[2])):
            head, worst = min(p["per_attribute"].items(), key=lambda kv: kv[1]["kept"] or 0.0)
            lines.append(
                f"| `{name}` | {recipe} | {iterations} | {p['train_seconds'] / 60:.0f} | {p['l1']:.4f} | "
                f"{p['real_mean']:.3f} -> {p['autoencoder_mean']:.3f} | {head} {worst['kept']:.2f} | "
                f"{'n/a' if p.get('fid_ratio') is None else format(p['fid_ratio'], '.2f')} | "
                f"{'yes' if p['passes'] else 'no: ' + ', '.join(p['failing'])} |"
            )
    return "\n".join(lines).rstrip()


def _mean_sd_text(value: dict | None, digits: int = 3) -> str:
    if not value or value.get("mean") is None:
        return "-"
    return (
        f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"
        if value.get("n", 0) > 1
        else f"{value['mean']:.{digits}f}"
    )


def ccella_block() -> str:
    """benchmarks/ccella.py's three studies: the class read from held-out reports, the ablation over training seeds,
    the low-data classifier study."""
    path = RESULTS / "ccella.json"
    if not path.is_file():
        return (
            "Not measured yet: `bundles/ccella_prostate_mri` ships no weights. Run `python benchmarks/ccella.py` "
            "once it does."
        )
    r = _result("ccella")
    lines = []
    if "class_from_report" in r:
        c, reports = r["class_from_report"], r["class_from_report"]["reports"]
        lines += [
            f"Class from the report, measured by `{c['command']}` on {reports['n']} held-out non-empty reports "
            f"({reports['positives']} csPCa; dataset seed {c['seed']}):",
            "",
            "| accuracy | sensitivity | specificity | ROC AUC | goal |",
            "|---|---|---|---|---|",
            f"| {reports['accuracy']:.3f} | {reports['sensitivity']:.3f} | {reports['specificity']:.3f} | "
            f"{reports['auc']:.3f} | accuracy >= {c['goal']['accuracy']} |",
            "",
        ]
    if "ablation" in r:
        lines += [
            f"Ablation, measured by `{r['ablation']['command']}` (mean ± sd over training seeds):",
            "",
            "| arm | seeds | valid | FID / floor | class agreement | "
            + " | ".join(next(iter(r["ablation"]["arms"].values()))["summary"]["attribute_accuracy"])
            + " |",
            "|---|---|---|---|---|"
            + "---|" * len(next(iter(r["ablation"]["arms"].values()))["summary"]["attribute_accuracy"]),
        ]
        for arm, entry in r["ablation"]["arms"].items():
            summary = entry["summary"]
            attributes = " | ".join(_mean_sd_text(v) for v in summary["attribute_accuracy"].values())
            lines.append(
                f"| {arm} | {len(entry['seeds'])} | {_mean_sd_text(summary['valid_fraction'])} | "
                f"{_mean_sd_text(summary['fid_ratio'], 2)} | {_mean_sd_text(summary['class_agreement'])} | "
                f"{attributes} |"
            )
        lines.append("")
    if "classifier" in r:
        c = r["classifier"]
        lines += [
            f"Low-data classifier, measured by `{c['command']}` ({c['n_test']} held-out real volumes, "
            f"M = {c['synthetic']} synthetic; mean ± sd over seeds):",
            "",
            "| training set | accuracy | ROC AUC |",
            "|---|---|---|",
        ]
        for name, entry in c["arms"].items():
            lines.append(f"| {name} | {_mean_sd_text(entry['accuracy'])} | {_mean_sd_text(entry['auc'])} |")
    return "\n".join(lines).rstrip()


def medcodi_block() -> str:
    """benchmarks/medcodi.py's tables: per task, each generated view's quality and the cross-stream agreements;
    each generated report's text and label scores; joint against independent generation."""
    path = RESULTS / "medcodi.json"
    if not path.is_file():
        return (
            "Not measured yet: `bundles/medcodim_cxr` ships no weights. Run `python benchmarks/medcodi.py` once it "
            "does."
        )
    r = _result("medcodi")
    lines = [f"Measured by `{r['command']}` (`benchmarks/results/medcodi.json`).", ""]
    if "tasks" in r:
        lines += ["| task | generated | n | valid | attribute accuracy | FID / floor |", "|---|---|---|---|---|---|"]
        for name, task in r["tasks"].items():
            for view in ("frontal", "lateral"):
                if view in task:
                    v = task[view]
                    lines.append(
                        f"| {name} | {view} | {task['n']} | {v['valid_fraction']:.3f} | "
                        f"{v['attribute_accuracy']:.3f} | {v['fid_ratio']:.2f}x |"
                    )
        lines += ["", "| task | agreement | mean | per attribute |", "|---|---|---|---|"]
        for name, task in r["tasks"].items():
            for key, value in task.items():
                if key.startswith("consistency") and value.get("mean") is not None:
                    per = ", ".join(f"{a} {x:.2f}" for a, x in value["per_attribute"].items())
                    lines.append(
                        f"| {name} | {key.removeprefix('consistency_').replace('_', ' ')} | "
                        f"{value['mean']:.3f} | {per} |"
                    )
        lines += [
            "",
            "| task | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | ROUGE-L | label micro F1 | label macro F1 | empty |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, task in r["tasks"].items():
            if "report" in task:
                t = task["report"]
                lines.append(
                    f"| {name} | {t['bleu1']:.3f} | {t['bleu2']:.3f} | {t['bleu3']:.3f} | {t['bleu4']:.3f} | "
                    f"{t['rouge_l']:.3f} | {t['label_f1']['micro_f1']:.3f} | {t['label_f1']['macro_f1']:.3f} | "
                    f"{t['empty_fraction']:.2f} |"
                )
    if "joint" in r:
        lines += [
            "",
            "| task | arm | generated | attribute accuracy | FID / floor | cross-stream agreement |",
            "|---|---|---|---|---|---|",
        ]
        for name, arms in r["joint"].items():
            for arm, task in arms.items():
                agreements = [
                    v["mean"] for k, v in task.items() if k.startswith("consistency") and v.get("mean") is not None
                ]
                for view in ("frontal", "lateral"):
                    if view in task:
                        v = task[view]
                        lines.append(
                            f"| {name} | {arm} | {view} | {v['attribute_accuracy']:.3f} | {v['fid_ratio']:.2f}x | "
                            f"{np.mean(agreements):.3f} |"
                        )
    if "prompts" in r:
        arms = list(r["prompts"])
        seeds = len(next(iter(r["prompts"].values()))["seeds"])
        lines += [
            "",
            f"Multi- against single-prompt training, mean ± sd over {seeds} training seeds:",
            "",
            "| measure | " + " | ".join(arms) + " |",
            "|---|" + "---|" * len(arms),
        ]
        for key in r["prompts"][arms[0]]["summary"]:
            lines.append(
                f"| {key} | " + " | ".join(_mean_sd_text(r["prompts"][a]["summary"].get(key)) for a in arms) + " |"
            )
    return "\n".join(lines)


def fill(page: str, name: str, content: str, path: Path) -> str:
    pattern = re.compile(
        rf"(<!-- generated:{name} -->\n).*?(<!-- /generated:{name} -->)", re.S
    )  # the block may be empty
    if not pattern.search(page):
        raise ValueError(f"{path}: no block '<!-- generated:{name} -->' ... '<!-- /generated:{name} -->'")
    return pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), page)


def render(page: str) -> str:
    for kind in KINDS:
        page = fill(page, kind, block(kind), PAGE)
    return page


def figures() -> None:
    from medgen_monai.phantoms.gallery import save_gallery, save_kind_figure

    IMAGES.mkdir(exist_ok=True)
    samples = {}
    for kind in KINDS:
        samples[kind] = list(get_phantom(kind).generate_many(FIGURE_CASES, seed=FIGURE_SEED))
        save_kind_figure(samples[kind], IMAGES / f"phantoms_{kind}.png", columns=4)
    save_gallery({k: v[:6] for k, v in samples.items()}, IMAGES / "gallery.png")
    from medgen_monai.metrics.audit import WEIGHTS_DIR

    for unit in audit_reports():
        shutil.copyfile(WEIGHTS_DIR / f"audit_{unit}.png", IMAGES / f"audit_{unit}.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the generated blocks are current")
    args = parser.parse_args()
    pages = {
        PAGE: render,
        AUDIT_PAGE: lambda page: fill(
            fill(fill(page, "audit", audit_block(), AUDIT_PAGE), "validity", validity_block(), AUDIT_PAGE),
            "seeds",
            seeds_block(),
            AUDIT_PAGE,
        ),
        QUALITY_PAGE: lambda page: fill(
            fill(page, "quality", quality_block(), QUALITY_PAGE), "autoencoders", autoencoders_block(), QUALITY_PAGE
        ),
        **{
            readme: (
                lambda page, name=readme.parents[1].name, path=readme: fill(
                    fill(page, "quality", bundle_quality_block(name), path),
                    "training",
                    bundle_training_block(name),
                    path,
                )
            )
            for readme in [root / "docs" / "README.md" for root in shipped_bundles(DOCS.parent / "bundles")]
        },
        ENGINE_PAGE: lambda page: fill(
            fill(
                fill(fill(page, "sampling", sampling_block(), ENGINE_PAGE), "phantoms", phantoms_block(), ENGINE_PAGE),
                "sampling_diagnostics",
                sampling_diagnostics_block(),
                ENGINE_PAGE,
            ),
            "recipes",
            recipes_block(),
            ENGINE_PAGE,
        ),
        RESULTS_PAGE: lambda page: fill(
            fill(page, "vap_ablation", vap_ablation_block(), RESULTS_PAGE),
            "vap_projection_sweep",
            vap_projection_sweep_block(),
            RESULTS_PAGE,
        ),
        DICOM_PAGE: lambda page: fill(page, "dciodvfy", dicom_validation_block(), DICOM_PAGE),
        MEDCODI_PAGE: lambda page: fill(page, "medcodi", medcodi_block(), MEDCODI_PAGE),
        CCELLA_PAGE: lambda page: fill(page, "ccella", ccella_block(), CCELLA_PAGE),
    }
    stale = []
    for path, update in pages.items():
        page = path.read_text()
        new = update(page)
        if new != page:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check:
        for path in stale:
            print(f"{path} is stale: run python docs/build_docs.py", file=sys.stderr)
        return 1 if stale else 0
    figures()
    print(f"wrote {', '.join(map(str, pages))} and the figures in {IMAGES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
