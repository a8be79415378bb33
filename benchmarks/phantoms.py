"""Phantom generation speed, per kind, at the default size.

Writes benchmarks/results/phantoms.json and benchmarks/results/phantoms.png.

    python benchmarks/phantoms.py [--n 400] [--n3d 60]

Measured per kind in one process:
- ``generate_per_s``: cases per second, generation only (images + attributes + text);
- ``generate_write_per_s``: cases per second, generated and written in the real layout;
- ``write_only_per_s``: the baseline, writing the same already-generated cases in the same
  layout; ``write_share``: writing's share of the generate+write time (write-only seconds /
  generate+write seconds).
Targets (issue 2): >= 200 2D cases/s and >= 10 volumes/s, generation only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from medgen_monai.data import write_dataset
from medgen_monai.phantoms import KINDS, get_phantom

RESULTS = Path(__file__).parent / "results"
TARGETS = {"derm": 200.0, "colon": 200.0, "cxr": 200.0, "prostate": 10.0}


def measure(kind: str, n: int, repeats: int = 3) -> dict:
    phantom = get_phantom(kind)
    list(phantom.generate_many(min(n, 5), seed=99))  # warm-up (imports, caches)
    generate_times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        samples = list(phantom.generate_many(n, seed=r))
        generate_times.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_dataset(phantom.layout, samples, Path(tmp) / "write_only")
        write_only = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_dataset(phantom.layout, phantom.generate_many(n, seed=0), Path(tmp) / "generate_write")
        generate_write = time.perf_counter() - t0
    best = min(generate_times)
    return {
        "n": n,
        "size": list(phantom.default_size),
        "views": list(phantom.views),
        "layout": phantom.layout,
        "generate_per_s": n / best,
        "generate_per_s_runs": [n / t for t in generate_times],
        "write_only_per_s": n / write_only,
        "generate_write_per_s": n / generate_write,
        "write_share": write_only / generate_write,
        "target_generate_per_s": TARGETS[kind],
        "meets_target": n / best >= TARGETS[kind],
    }


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(results["kinds"])
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = range(len(kinds))
    gen = [results["kinds"][k]["generate_per_s"] for k in kinds]
    gw = [results["kinds"][k]["generate_write_per_s"] for k in kinds]
    ax.bar([i - 0.2 for i in x], gen, width=0.4, label="generate")
    ax.bar([i + 0.2 for i in x], gw, width=0.4, label="generate + write layout")
    ax.scatter(
        list(x), [TARGETS[k] for k in kinds], marker="_", s=600, color="red", label="target (generate)", zorder=3
    )
    ax.set_xticks(list(x), [f"{k}\n{'x'.join(map(str, results['kinds'][k]['size']))}" for k in kinds])
    ax.set_yscale("log")
    ax.set_ylabel("cases / s (log)")
    ax.set_title(f"Phantom generation, {results['machine']['cpu_count']} cores")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=400, help="2D cases per run")
    parser.add_argument("--n3d", type=int, default=60, help="3D cases per run")
    parser.add_argument("--kinds", default=",".join(KINDS))
    args = parser.parse_args()
    results = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "kinds": {},
    }
    for kind in args.kinds.split(","):
        n = args.n3d if get_phantom(kind).spatial_dims == 3 else args.n
        results["kinds"][kind] = measure(kind, n)
        r = results["kinds"][kind]
        print(
            f"{kind:9s} generate {r['generate_per_s']:8.1f}/s  generate+write {r['generate_write_per_s']:8.1f}/s  "
            f"target {r['target_generate_per_s']:.0f}/s  {'OK' if r['meets_target'] else 'BELOW TARGET'}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "phantoms.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / "phantoms.png")
    print(f"wrote {RESULTS / 'phantoms.json'} and {RESULTS / 'phantoms.png'}")


if __name__ == "__main__":
    main()
