"""Kvasir v2 layout: phantom round trip, byte-identical writes, real-data rules and every bad-input error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from layout_helpers import files
from PIL import Image

from medgen_monai.data import read_dataset, split_of, write_dataset
from medgen_monai.data.common import ATTRIBUTES_FILE
from medgen_monai.data.kvasir import KVASIR_CLASSES, OTHER_KVASIR_CLASSES, image_path, read, write
from medgen_monai.errors import DatasetError
from medgen_monai.phantoms import get_phantom

N = 8


@pytest.fixture(scope="module")
def samples():
    phantom = get_phantom("colon")
    # two of each class, so that every class folder is written
    return [phantom.generate(i, seed=0, size=32, label=KVASIR_CLASSES[i % 4]) for i in range(N)]


@pytest.fixture(scope="module")
def written(samples, tmp_path_factory) -> Path:
    return write(samples, tmp_path_factory.mktemp("kvasir") / "kvasir-dataset-v2")


@pytest.fixture
def dataset(written, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(written, tmp_path / "copy"))


def ground_truth_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / ATTRIBUTES_FILE).read_text().splitlines()]


# ---- round trip --------------------------------------------------------------------------------


def test_layout_on_disk(written, samples):
    assert sorted(p.name for p in written.iterdir()) == sorted([*KVASIR_CLASSES, ATTRIBUTES_FILE])
    for sample in samples:
        path = written / sample.label / f"{sample.meta['image_id']}.jpg"
        assert path.is_file() and path == image_path(written, sample.label, sample.meta["image_id"])
    lines = ground_truth_lines(written)
    assert [line["id"] for line in lines] == [s.meta["image_id"] for s in samples]
    assert set(lines[0]) == {"id", "kind", "seed", "index", "label", "text", "attributes"}
    assert lines[1]["text"] == samples[1].text and lines[1]["kind"] == "colon" and lines[1]["index"] == 1


def test_round_trip(written, samples):
    datalist = read_dataset("kvasir", written)
    by_id = {s.meta["image_id"]: s for s in samples}
    assert sorted(r["id"] for r in datalist) == sorted(by_id)
    order = [(r["label"], r["id"]) for r in datalist]
    assert order == sorted(order)  # by class order, then id
    for record in datalist:
        sample = by_id[record["id"]]
        assert record["patient_id"] == record["id"]
        assert record["label_name"] == sample.label and record["label"] == KVASIR_CLASSES.index(sample.label)
        assert record["attributes"] == sample.attributes and record["text"] == sample.text and record["text"]
        assert record["split"] == split_of(record["id"])
        pixels = np.asarray(Image.open(record["image"]))
        assert pixels.shape == (32, 32, 3) and np.abs(pixels.astype(int) - sample.images["image"]).mean() < 4


def test_writes_are_byte_identical_per_seed(written, samples, tmp_path):
    phantom = get_phantom("colon")
    again = write([phantom.generate(i, seed=0, size=32, label=KVASIR_CLASSES[i % 4]) for i in range(N)], tmp_path / "a")
    assert files(again) == files(written)
    other = files(write_dataset("colon", phantom.generate_many(4, seed=1, size=32), tmp_path / "other"))
    assert not {k for k in other if k.endswith(".jpg")} & {k for k in files(written) if k.endswith(".jpg")}


def test_reader_works_on_real_layout_without_ground_truth(dataset):
    (dataset / ATTRIBUTES_FILE).unlink()
    # the real dataset: the other Kvasir v2 classes (skipped), stray files, upper-case and .jpeg suffixes
    for name in OTHER_KVASIR_CLASSES:
        (dataset / name).mkdir()
        (dataset / name / "0a1b2c3d-0000-4000-8000-000000000000.jpg").write_bytes(b"not decoded")
    (dataset / ".ipynb_checkpoints").mkdir()
    (dataset / "polyps" / ".DS_Store").write_bytes(b"")
    (dataset / "polyps" / "readme.txt").write_text("ignored")
    source = next((dataset / "polyps").glob("*.jpg"))
    shutil.copy(source, dataset / "polyps" / "ffffffff-real-image.JPEG")
    datalist = read(dataset)
    assert len(datalist) == N + 1 and all("attributes" not in r and r["text"] == "" for r in datalist)
    assert {r["label_name"] for r in datalist} == set(KVASIR_CLASSES)
    assert datalist[[r["id"] for r in datalist].index("ffffffff-real-image")]["label_name"] == "polyps"


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(DatasetError, match=r"missing: root: a Kvasir v2 folder .*folder not found"):
        read(tmp_path / "missing")
    (tmp_path / "empty" / "polyps").mkdir(parents=True)
    (tmp_path / "empty" / "polyps" / "notes.txt").write_text("no images")
    with pytest.raises(DatasetError, match=r"empty: images: at least one .jpg image .*none found") as err:
        read(tmp_path / "empty")
    assert err.value.field == "images"


def test_unknown_class_folder(dataset):
    (dataset / "adenomas").mkdir()
    with pytest.raises(DatasetError, match=r"adenomas: class folder: one of \['normal-cecum', .*got 'adenomas'") as err:
        read(dataset)
    assert err.value.path == str(dataset / "adenomas")


def test_ground_truth_label_disagrees_with_folder(dataset, samples):
    sample = samples[1]
    source = image_path(dataset, sample.label, sample.meta["image_id"])
    source.rename(image_path(dataset, "normal-cecum", sample.meta["image_id"]))
    with pytest.raises(
        DatasetError,
        match=rf"{ATTRIBUTES_FILE}: label: image {sample.meta['image_id']} is in folder "
        rf"'normal-cecum' but its label is '{sample.label}'",
    ):
        read(dataset)


def test_same_id_in_two_class_folders(dataset, samples):
    sample = samples[2]
    shutil.copy(
        image_path(dataset, sample.label, sample.meta["image_id"]),
        image_path(dataset, "ulcerative-colitis", sample.meta["image_id"]),
    )
    with pytest.raises(DatasetError, match=rf"{sample.meta['image_id']}.jpg: id: a unique image id"):
        read(dataset)


@pytest.mark.parametrize("line", ["{not json", '{"id": "x"}'])
def test_malformed_ground_truth(dataset, line):
    path = dataset / ATTRIBUTES_FILE
    path.write_text(path.read_text() + line + "\n")
    with pytest.raises(DatasetError, match=rf"{ATTRIBUTES_FILE}: line {N + 1}: a JSON object"):
        read(dataset)


def test_writer_rejects_other_kinds_and_repeated_ids(samples, tmp_path):
    with pytest.raises(ValueError, match="expected 'colon' samples, got a 'derm' sample"):
        write([type(samples[0])("derm", 0, 0, {}, "NV", {}, "")], tmp_path / "a")
    with pytest.raises(ValueError, match=f"image id {samples[0].meta['image_id']} appears twice"):
        write([samples[0], samples[0]], tmp_path / "b")
