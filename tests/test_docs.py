"""User docs stay in sync with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_generated_docs_are_current():
    run = subprocess.run([sys.executable, "docs/build_docs.py", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_readme_quick_start_is_the_two_make_commands():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1]
    first_block = quick.split("```", 2)[1]
    assert [line.strip() for line in first_block.splitlines()[1:] if line.strip()][:2] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
