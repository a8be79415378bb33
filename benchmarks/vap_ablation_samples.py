"""Side by side: each VAP ablation arm's samples for the same requests, under the real image each description came from.

``python benchmarks/vap_ablation.py`` keeps every generated image under its work folder
(``runs/vap_ablation/<modality>/<condition>/seed<k>/<split>/<request id>.png``) and every request (description,
attributes and the bank id of the image it came from) in ``runs/vap_ablation/<modality>/requests.json``. This script
reads both and draws one figure per modality: a column per request, the real source image on top, then one row per
condition, all from one training seed (the arms of a seed share initialisation, data order and sampling noise, so a
column differs only by the condition). Nothing is trained or generated here::

    python benchmarks/vap_ablation_samples.py --modalities colon,cxr --seed 2
    # benchmarks/results/vap_ablation_samples_<modality>.png
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vap_ablation import CONDITIONS, HELDOUT, MODALITIES, RESULTS, ROOT, SPLITS, bundle_dir, matches  # noqa: E402

__all__ = ["pick_requests", "sample_figure"]


def pick_requests(
    requests: Sequence[Mapping[str, Any]], combinations: Sequence[Mapping[str, str]], columns: int
) -> list[Mapping[str, Any]]:
    """Up to ``columns`` distinct requests, taken in turn from each held-out combination or, with no combinations (the
    seen split), from each category, so that every group shows."""
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    if combinations:
        groups = [[r for r in requests if matches(r["attributes"], [c])] for c in combinations]
    else:
        categories = list(dict.fromkeys(r["category"] for r in requests))
        groups = [[r for r in requests if r["category"] == c] for c in categories]
    picked: dict[str, Mapping[str, Any]] = {}  # by id: a request showing both combinations is drawn once
    for i in range(max((len(g) for g in groups), default=0)):
        for group in groups:
            if i < len(group) and len(picked) < columns:
                picked.setdefault(group[i]["id"], group[i])
    return list(picked.values())


def _source_images(modality: str, work: Path) -> dict[str, str]:
    """Bank id -> image path, for every bank the requests draw from: the test bank (held-out requests) and the training
    bank (seen requests): the bundle's shipped one, or the ablation's own when it trained on other data."""
    from medgen_monai.describe import DescriptionBank

    paths = {}
    for bank_dir in (work / "test_bank", work / "train_bank", bundle_dir(modality) / "bank"):
        if bank_dir.is_dir():
            paths.update({key: record["image"] for key, record in DescriptionBank(bank_dir).index().items()})
    return paths


def _load(path: Path | str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)


def sample_figure(
    modality: str,
    work: Path,
    seed: int,
    out: Path,
    split: str = "heldout",
    columns: int = 6,
    conditions: Sequence[str] = CONDITIONS,
) -> Path:
    """Draw ``out``: the real source image and each condition's sample for up to ``columns`` requests of ``split``.

    Raises:
        ValueError: an unknown condition; the ablation has not generated this seed's images of one of ``conditions``
            (names the first missing file); or a request's source image is in none of the banks.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medgen_monai.io.atomic import atomic_path

    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown or not conditions:
        raise ValueError(f"conditions must be some of {CONDITIONS}, got {list(conditions)}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    requests_path = work / "requests.json"
    if not requests_path.is_file():
        raise ValueError(
            f"{requests_path}: missing; run python benchmarks/vap_ablation.py --modalities {modality} first"
        )
    requests = json.loads(requests_path.read_text())[split]
    combinations = HELDOUT[modality] if split == "heldout" else []
    picked = pick_requests(requests, combinations, columns)
    sources = _source_images(modality, work)
    rows: list[tuple[str, list[np.ndarray]]] = []
    real = []
    for r in picked:
        if r["source"] not in sources:
            raise ValueError(f"{work}: request {r['id']}'s source image {r['source']} is in none of the banks")
        real.append(_load(sources[r["source"]]))
    rows.append(("real (source of\nthe description)", real))
    for condition in conditions:
        paths = [work / condition / f"seed{seed}" / split / f"{r['id']}.png" for r in picked]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"{missing[0]}: missing; the ablation has not generated seed {seed} of {condition} yet")
        rows.append((condition.replace("_", "\n"), [_load(p) for p in paths]))
    fig, axes = plt.subplots(len(rows), len(picked), figsize=(1.9 * len(picked) + 1.2, 1.9 * len(rows)), squeeze=False)
    for row, (name, images) in enumerate(rows):
        for col, image in enumerate(images):
            ax = axes[row][col]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                asked = {k: v for c in combinations for k, v in c.items() if picked[col]["attributes"].get(k) == v}
                title = ": ".join(
                    [picked[col]["category"], *([", ".join(f"{k}={v}" for k, v in asked.items())] if asked else [])]
                )
                ax.set_title("\n".join(textwrap.wrap(title, 26)), fontsize=6)
        axes[row][0].set_ylabel(name, fontsize=7)
    fig.suptitle(f"{modality}: {split} requests, training seed {seed}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modalities", default="derm,colon,cxr")
    parser.add_argument("--seed", type=int, default=0, help="the training seed whose samples to show")
    parser.add_argument("--split", default="heldout", choices=SPLITS)
    parser.add_argument("--columns", type=int, default=6)
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="the rows, in order (default: all four)")
    parser.add_argument("--work_dir", default=str(ROOT / "runs" / "vap_ablation"))
    parser.add_argument("--out_dir", default=str(RESULTS))
    args = parser.parse_args(argv)
    for modality in args.modalities.split(","):
        if modality not in MODALITIES:
            raise ValueError(f"--modalities: unknown {modality!r}; expected some of {list(MODALITIES)}")
        suffix = "" if args.split == "heldout" else f"_{args.split}"
        out = sample_figure(
            modality,
            Path(args.work_dir) / modality,
            args.seed,
            Path(args.out_dir) / f"vap_ablation_samples_{modality}{suffix}.png",
            args.split,
            args.columns,
            args.conditions.split(","),
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
