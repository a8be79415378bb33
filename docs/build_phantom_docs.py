"""Fill the generated parts of docs/phantoms.md from the code: vocabulary tables, an example text
per kind, and a figure per kind (docs/images/phantoms_<kind>.png).

    python docs/build_phantom_docs.py            # rewrite tables and figures
    python docs/build_phantom_docs.py --check    # exit 1 if the tables are stale (tests run this)

Generated blocks sit between ``<!-- generated:KIND -->`` and ``<!-- /generated:KIND -->``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from medgen_monai.phantoms import KINDS, get_phantom

DOCS = Path(__file__).parent
PAGE = DOCS / "phantoms.md"
IMAGES = DOCS / "images"
FIGURE_SEED = 0
FIGURE_CASES = 8


def block(kind: str) -> str:
    phantom = get_phantom(kind)
    vocab = phantom.vocabulary()
    lines = [
        f"Classes ({'multi-label' if vocab['multilabel'] else 'one per case'}): " + ", ".join(f"`{c}`" for c in vocab["classes"]),
        "",
        f"Views: {', '.join(vocab['views'])}; default size {'x'.join(map(str, phantom.default_size))}.",
        "",
        "| attribute | values | visible in | meaning |",
        "|---|---|---|---|",
    ]
    for name, a in vocab["attributes"].items():
        lines.append(f"| `{name}` | {', '.join(f'`{v}`' for v in a['values'])} | {', '.join(a['views'])} | {a['doc']} |")
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


def render(page: str) -> str:
    for kind in KINDS:
        pattern = re.compile(rf"(<!-- generated:{kind} -->\n).*?(\n<!-- /generated:{kind} -->)", re.S)
        if not pattern.search(page):
            raise ValueError(f"{PAGE}: no block '<!-- generated:{kind} -->' ... '<!-- /generated:{kind} -->'")
        page = pattern.sub(lambda m: m.group(1) + block(kind) + m.group(2), page)
    return page


def figures() -> None:
    from medgen_monai.phantoms.gallery import save_gallery, save_kind_figure

    IMAGES.mkdir(exist_ok=True)
    samples = {}
    for kind in KINDS:
        samples[kind] = list(get_phantom(kind).generate_many(FIGURE_CASES, seed=FIGURE_SEED))
        save_kind_figure(samples[kind], IMAGES / f"phantoms_{kind}.png", columns=4)
    save_gallery({k: v[:6] for k, v in samples.items()}, IMAGES / "gallery.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the generated blocks are current")
    args = parser.parse_args()
    page = PAGE.read_text()
    new = render(page)
    if args.check:
        if new != page:
            print(f"{PAGE} is stale: run python docs/build_phantom_docs.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(new)
    figures()
    print(f"wrote {PAGE} and {IMAGES}/phantoms_*.png, gallery.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
