"""PI-CAI layout: phantom round trip (through MONAI's loader and RAS orientation), byte-identical writes,
real-data rules and every bad-input error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from layout_helpers import files, rewrite, rows

from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.data.common import ATTRIBUTES_FILE
from medgen_monai.data.picai import (
    MARKSHEET_COLUMNS,
    MARKSHEET_FILE,
    REAL_MARKSHEET_FILE,
    image_path,
    read,
    report_path,
    write,
)
from medgen_monai.errors import DatasetError
from medgen_monai.phantoms import get_phantom

N = 6
SIZE = (32, 32, 16)


@pytest.fixture(scope="module")
def samples():
    prostate = get_phantom("prostate")
    out = list(prostate.generate_many(N - 1, seed=0, size=SIZE))
    # a left-sided lesion for the orientation check
    left = {"lesion": "present", "zone": "peripheral", "side": "left", "level": "mid", "size": "large", "pirads": "5"}
    return out + [prostate.generate(N - 1, seed=0, size=SIZE, attributes=left)]


@pytest.fixture(scope="module")
def written(samples, tmp_path_factory) -> Path:
    return write(samples, tmp_path_factory.mktemp("picai") / "prostate")


@pytest.fixture
def dataset(written, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(written, tmp_path / "copy"))


# ---- round trip --------------------------------------------------------------------------------


def test_layout_on_disk(written, samples):
    sample = samples[0]
    pid, sid = sample.meta["patient_id"], sample.meta["study_id"]
    assert image_path(written, pid, sid) == written / "images" / pid / f"{pid}_{sid}_t2w.mha"
    assert all(image_path(written, s.meta["patient_id"], s.meta["study_id"]).is_file() for s in samples)
    marksheet = rows(written / MARKSHEET_FILE)
    assert list(marksheet[0]) == list(MARKSHEET_COLUMNS) and len(marksheet) == N
    assert [r["case_csPCa"] for r in marksheet] == ["YES" if s.label == "csPCa" else "NO" for s in samples]
    assert marksheet[0]["patient_age"] == str(sample.meta["age"]) and marksheet[0]["psa"] == str(sample.meta["psa"])
    # a report file per non-empty text, none for an empty one
    for s in samples:
        assert report_path(written, s.meta["patient_id"], s.meta["study_id"]).is_file() == bool(s.text)


def test_empty_report_writes_no_file(samples, tmp_path):
    sample = samples[1]
    silent = type(sample)(**{**sample.__dict__, "text": ""})
    root = write([silent], tmp_path / "silent")
    assert not (root / "reports").exists() and read(root)[0]["text"] == ""


def test_round_trip(written, samples):
    datalist = read_dataset("picai", written)
    assert [r["id"] for r in datalist] == [f"{s.meta['patient_id']}_{s.meta['study_id']}" for s in samples]
    for record, sample in zip(datalist, samples):
        assert record["patient_id"] == sample.meta["patient_id"] and record["study_id"] == sample.meta["study_id"]
        assert record["label"] == int(sample.label == "csPCa") and record["label_name"] == sample.label
        assert record["attributes"] == sample.attributes and record["text"] == sample.text
        assert record["age"] == sample.meta["age"] and record["psa"] == pytest.approx(sample.meta["psa"])
        assert record["split"] in ("train", "val", "test") and Path(record["image"]).is_file()


def test_monai_loads_the_volume_in_ras_with_its_spacing(written, samples):
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, Orientation

    load = Compose([LoadImage(image_only=True), EnsureChannelFirst(), Orientation(axcodes="RAS")])
    for record, sample in zip(read(written)[-2:], samples[-2:]):
        image = load(record["image"])
        assert tuple(image.shape) == (1, *SIZE)
        assert np.allclose(image[0].numpy(), sample.images["t2w"])
        assert np.allclose(image.pixdim.numpy(), sample.meta["spacing"], atol=1e-4)
    # the left-sided lesion lies on the patient's left in world coordinates: RAS x below the gland's
    sample = samples[-1]
    affine = image.affine.numpy()
    world = lambda mask: affine[:3, :3] @ np.argwhere(mask).mean(axis=0) + affine[:3, 3]  # noqa: E731
    assert sample.attributes["side"] == "left"
    assert world(sample.masks["lesion"])[0] < world(sample.masks["gland"])[0] - 5


def test_writes_are_byte_identical_per_seed(written, samples, tmp_path):
    again = write(samples, tmp_path / "again")
    assert files(again) == files(written)
    regenerated = get_phantom("prostate").generate(0, seed=0, size=SIZE)
    root = write([regenerated], tmp_path / "one")
    name = (
        f"images/{regenerated.meta['patient_id']}/"
        f"{regenerated.meta['patient_id']}_{regenerated.meta['study_id']}_t2w.mha"
    )
    assert files(root)[name] == files(written)[name]


def test_reader_works_on_real_layout_without_ground_truth(dataset, samples):
    """Real PI-CAI: no phantom_attributes.jsonl, no reports, marksheet in picai_labels/, volumes in fold folders."""
    (dataset / ATTRIBUTES_FILE).unlink()
    shutil.rmtree(dataset / "reports")
    real = dataset / REAL_MARKSHEET_FILE
    real.parent.mkdir(parents=True)
    (dataset / MARKSHEET_FILE).rename(real)
    (dataset / "images").rename(dataset / "picai_public_images_fold0")
    datalist = read(dataset)
    assert len(datalist) == N and all("attributes" not in r for r in datalist)
    assert all(r["text"] == "" and "picai_public_images_fold0" in r["image"] for r in datalist)
    # empty clinical cells (common in the real marksheet) read as None
    table = rows(real)
    table[0].update({"psa": "", "patient_age": "nan"})
    rewrite(real, table)
    assert (read(dataset)[0]["psa"], read(dataset)[0]["age"]) == (None, None)


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_marksheet(dataset):
    (dataset / MARKSHEET_FILE).unlink()
    with pytest.raises(DatasetError, match=rf"{MARKSHEET_FILE}: {MARKSHEET_FILE}: file not found"):
        read(dataset)


@pytest.mark.parametrize("column", ["patient_id", "study_id", "case_csPCa"])
def test_missing_column(dataset, column):
    table = rows(dataset / MARKSHEET_FILE)
    rewrite(dataset / MARKSHEET_FILE, table, [c for c in table[0] if c != column])
    with pytest.raises(DatasetError, match=rf"{MARKSHEET_FILE}: {column}: required column missing") as err:
        read(dataset)
    assert err.value.field == column


def test_missing_volume(dataset, samples):
    sample = samples[2]
    path = image_path(dataset, sample.meta["patient_id"], sample.meta["study_id"])
    path.unlink()
    with pytest.raises(
        DatasetError, match=rf"{path.name}: t2w: the T2-weighted volume of case .* \(file not found\)"
    ) as err:
        read(dataset)
    assert err.value.path == str(path)


def test_bad_cspca_value_and_bad_number(dataset):
    table = rows(dataset / MARKSHEET_FILE)
    table[1]["case_csPCa"] = "maybe"
    rewrite(dataset / MARKSHEET_FILE, table)
    with pytest.raises(
        DatasetError, match=rf"{MARKSHEET_FILE}: case_csPCa: case \d+_\d+: expected YES or NO, got 'maybe'"
    ):
        read(dataset)
    table[1]["case_csPCa"] = "yes"  # case does not matter
    table[2]["psa"] = "high"
    rewrite(dataset / MARKSHEET_FILE, table)
    with pytest.raises(
        DatasetError, match=rf"{MARKSHEET_FILE}: psa: case \d+_\d+: expected a number or empty, got 'high'"
    ):
        read(dataset)


def test_writer_rejects_other_kinds_and_repeated_cases(samples, tmp_path):
    with pytest.raises(ValueError, match="expected 'prostate' samples, got a 'derm' sample"):
        write([type(samples[0])("derm", 0, 0, {}, "NV", {}, "")], tmp_path / "a")
    with pytest.raises(ValueError, match="appears twice"):
        write_dataset("prostate", [samples[0], samples[0]], tmp_path / "b")
