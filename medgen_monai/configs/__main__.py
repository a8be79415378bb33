"""``python -m medgen_monai.configs [--check] [--bundles DIR]``: copy the shared bundle configs out, or check them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import shared_config_problems, sync_shared_configs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m medgen_monai.configs", description=__doc__)
    parser.add_argument("--bundles", default=str(Path("bundles")), help="the bundles folder (default: ./bundles)")
    parser.add_argument("--check", action="store_true", help="report copies that drifted; change nothing")
    args = parser.parse_args(argv)
    if args.check:
        problems = shared_config_problems(args.bundles)
        print("\n".join(problems) or "every shared config is in sync")
        return 1 if problems else 0
    for path in sync_shared_configs(args.bundles):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
