"""ISIC 2019 layout: phantom round trip, byte-identical writes, real-data rules and every bad-input error."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from layout_helpers import files, rewrite, rows
from PIL import Image

from medgen_monai.data import read_dataset, split_datalist, write_dataset
from medgen_monai.data.common import ATTRIBUTES_FILE
from medgen_monai.data.isic import (
    GROUND_TRUTH_COLUMNS,
    GROUND_TRUTH_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    image_path,
    read,
    write,
)
from medgen_monai.errors import DatasetError
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.derm import DERM_CLASSES

N = 6


@pytest.fixture(scope="module")
def samples():
    return list(get_phantom("derm").generate_many(N, seed=0, size=32))


@pytest.fixture(scope="module")
def written(samples, tmp_path_factory) -> Path:
    return write(samples, tmp_path_factory.mktemp("isic") / "derm")


@pytest.fixture
def dataset(written, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(written, tmp_path / "copy"))


def test_layout_on_disk(written, samples):
    image_id = samples[0].meta["image_id"]
    assert image_path(written, image_id) == written / "ISIC_2019_Training_Input" / f"{image_id}.jpg"
    assert image_path(written, image_id).is_file()
    truth = rows(written / GROUND_TRUTH_FILE)
    assert list(truth[0]) == list(GROUND_TRUTH_COLUMNS) and len(truth) == N
    assert all(sum(float(r[c]) for c in GROUND_TRUTH_COLUMNS[1:]) == 1.0 for r in truth)
    assert {r["SCC"] for r in truth} == {"0.0"}
    metadata = rows(written / METADATA_FILE)
    assert list(metadata[0]) == list(METADATA_COLUMNS) and metadata[0]["lesion_id"].startswith("BCN_")


def test_round_trip(written, samples):
    datalist = read_dataset("isic", written)
    assert [r["id"] for r in datalist] == [s.meta["image_id"] for s in samples]
    for record, sample in zip(datalist, samples):
        assert record["label_name"] == sample.label and record["label"] == DERM_CLASSES.index(sample.label)
        assert record["attributes"] == sample.attributes and record["text"] == sample.text
        assert record["patient_id"] == sample.meta["lesion_id"] and record["split"] in ("train", "val", "test")
        assert record["age_approx"] == float(sample.meta["age_approx"]) and record["sex"] == sample.meta["sex"]
        pixels = np.asarray(Image.open(record["image"]))
        assert pixels.shape == (32, 32, 3) and np.abs(pixels.astype(int) - sample.images["image"]).mean() < 4
    assert sum(len(v) for v in split_datalist(datalist).values()) == N


def test_writes_are_byte_identical_per_seed(written, tmp_path):
    again = write_dataset("derm", get_phantom("derm").generate_many(N, seed=0, size=32), tmp_path / "again")
    assert files(again) == files(written)
    other = files(write(get_phantom("derm").generate_many(N, seed=1, size=32), tmp_path / "other"))
    assert not {k for k in other if k.endswith(".jpg")} & {k for k in files(written) if k.endswith(".jpg")}


def test_write_rejects_other_kinds_and_duplicate_ids(tmp_path, samples):
    with pytest.raises(ValueError, match="expected 'derm' samples"):
        write(get_phantom("cxr").generate_many(1, size=32), tmp_path / "x")
    with pytest.raises(ValueError, match="appears twice"):
        write([samples[0], samples[0]], tmp_path / "y")


def test_real_data_without_ground_truth_metadata_or_lesion_ids(dataset):
    (dataset / ATTRIBUTES_FILE).unlink()
    table = rows(dataset / METADATA_FILE)
    table[0]["lesion_id"] = ""  # many real ISIC 2019 rows have none
    rewrite(dataset / METADATA_FILE, table)
    datalist = read(dataset)
    assert all("attributes" not in r and r["text"] == "" for r in datalist)
    assert datalist[0]["patient_id"] == datalist[0]["id"]
    (dataset / METADATA_FILE).unlink()  # ISIC 2018-style: no metadata at all
    assert [r["patient_id"] for r in read(dataset)] == [r["id"] for r in datalist]


def test_unmodelled_classes_error_or_skip(dataset):
    table = rows(dataset / GROUND_TRUTH_FILE)
    table[1].update({c: "0.0" for c in GROUND_TRUTH_COLUMNS[1:]})
    table[1]["SCC"] = "1.0"
    rewrite(dataset / GROUND_TRUTH_FILE, table)
    with pytest.raises(
        DatasetError, match=rf"{GROUND_TRUTH_FILE}: SCC: image {table[1]['image']} is SCC.*skip_other_classes"
    ):
        read(dataset)
    assert [r["id"] for r in read(dataset, skip_other_classes=True)] == [
        r["image"] for i, r in enumerate(table) if i != 1
    ]


@pytest.mark.parametrize(
    "damage, pattern",
    [
        ("no_truth", rf"{GROUND_TRUTH_FILE}: {GROUND_TRUTH_FILE}: file not found"),
        ("no_column", rf"{GROUND_TRUTH_FILE}: VASC: required column missing"),
        ("bad_value", rf"{GROUND_TRUTH_FILE}: NV: image ISIC_\d+: expected 1.0 or 0.0, got 'yes'"),
        ("two_classes", rf"{GROUND_TRUTH_FILE}: image: image ISIC_\d+: exactly one class column"),
        ("no_image", r"ISIC_\d+\.jpg: image: file not found"),
        ("bad_age", rf"{METADATA_FILE}: age_approx: image ISIC_\d+: a number, got 'old'"),
        ("metadata_no_lesion", rf"{METADATA_FILE}: lesion_id: required column missing"),
    ],
)
def test_bad_input_names_file_and_field(dataset, damage, pattern):
    truth = rows(dataset / GROUND_TRUTH_FILE)
    if damage == "no_truth":
        (dataset / GROUND_TRUTH_FILE).unlink()
    elif damage == "no_column":
        rewrite(dataset / GROUND_TRUTH_FILE, truth, [c for c in GROUND_TRUTH_COLUMNS if c != "VASC"])
    elif damage == "bad_value":
        truth[0]["NV"] = "yes"
        rewrite(dataset / GROUND_TRUTH_FILE, truth)
    elif damage == "two_classes":
        truth[0].update({"MEL": "1.0", "NV": "1.0"})
        rewrite(dataset / GROUND_TRUTH_FILE, truth)
    elif damage == "no_image":
        image_path(dataset, truth[2]["image"]).unlink()
    elif damage == "bad_age":
        metadata = rows(dataset / METADATA_FILE)
        metadata[0]["age_approx"] = "old"
        rewrite(dataset / METADATA_FILE, metadata)
    elif damage == "metadata_no_lesion":
        metadata = rows(dataset / METADATA_FILE)
        rewrite(dataset / METADATA_FILE, metadata, [c for c in METADATA_COLUMNS if c != "lesion_id"])
    with pytest.raises(DatasetError, match=pattern):
        read(dataset)
