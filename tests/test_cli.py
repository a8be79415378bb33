"""The command line: every kind through `medgen-monai phantoms` into its real layout and back."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from medgen_monai.cli import _size, main
from medgen_monai.data import read_dataset
from medgen_monai.phantoms import KINDS, get_phantom


@pytest.mark.parametrize("kind", KINDS)
def test_phantoms_command_writes_the_real_layout(kind, tmp_path, capsys):
    main(["phantoms", "--kind", kind, "--n", "3", "--out", str(tmp_path), "--seed", "4", "--progress", "False"])
    records = read_dataset(kind, tmp_path)
    assert len(records) == 3
    expected = [get_phantom(kind).generate(i, seed=4) for i in range(3)]
    by_attributes = sorted(json.dumps(r["attributes"], sort_keys=True) for r in records)
    assert by_attributes == sorted(json.dumps(s.attributes, sort_keys=True) for s in expected)


def test_size_argument():
    assert _size("128") == (128,) and _size("128,128,64") == (128, 128, 64) and _size("[64, 32]") == (64, 32)
    assert _size(96) == 96 and _size(None) is None
    with pytest.raises(ValueError, match="--size"):
        _size("big")


def test_vocabulary_command(capsys):
    main(["vocabulary", "--kind", "derm"])
    assert json.loads(capsys.readouterr().out)["kind"] == "derm"


def test_bad_input_is_one_clear_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "medgen_monai", "phantoms", "--kind", "xray", "--n", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        == "medgen-monai: error: unknown phantom kind 'xray'; expected one of ['derm', 'colon', 'cxr', 'prostate']"
    )


def test_demo_writes_the_gallery_and_the_bundle_grid(tmp_path):
    main(["demo", "--out", str(tmp_path), "--steps", "3"])
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
    for name, classes in (
        ("ldm_label_derm", 7),
        ("vap_diffusion_derm", 7),
        ("vap_diffusion_colon", 4),
        ("vap_diffusion_cxr", 6),
    ):
        assert (tmp_path / name / "grid.png").stat().st_size > 2_000
        assert len(list((tmp_path / name).glob("*.json"))) == 2 * classes
