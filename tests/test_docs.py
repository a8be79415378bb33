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


def _user_docs() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bundles").glob("*/docs/*.md"))]


def test_every_link_in_the_docs_stays_in_the_repository_and_resolves():
    import re

    link = re.compile(r"\]\(([^)\s]+)\)")
    broken = []
    for doc in _user_docs():
        text = doc.read_text(encoding="utf-8")
        assert "../shared" not in text, f"{doc}: names a folder outside the repository"
        for target in link.findall(text):
            path = target.split("#", 1)[0]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # a scheme: http(s), mailto, ...
                broken.append(f"{doc.relative_to(ROOT)}: {target} leaves the repository")
            elif path:
                resolved = (doc.parent / path).resolve()
                if not resolved.is_relative_to(ROOT) or not resolved.exists():
                    broken.append(f"{doc.relative_to(ROOT)}: {target} does not resolve inside the repository")
    assert not broken, "\n".join(broken)
