"""MIMIC-CXR-JPG layout: phantom round trip, byte-identical writes, real-data rules and every bad-input error."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
from layout_helpers import files, rewrite, rows
from PIL import Image

from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.data.common import ATTRIBUTES_FILE
from medgen_monai.data.mimic_cxr import (
    CHEXPERT_COLUMNS,
    CHEXPERT_FILE,
    METADATA_COLUMNS,
    METADATA_FILE,
    SPLIT_FILE,
    image_path,
    read,
    report_path,
    report_sections,
    write,
)
from medgen_monai.errors import DatasetError
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.cxr import CXR_CLASSES

N = 5


@pytest.fixture(scope="module")
def samples():
    return list(get_phantom("cxr").generate_many(N, seed=0, size=32))


@pytest.fixture(scope="module")
def written(samples, tmp_path_factory) -> Path:
    return write(samples, tmp_path_factory.mktemp("mimic") / "cxr")


@pytest.fixture
def dataset(written, tmp_path) -> Path:
    """A private copy to damage."""
    return Path(shutil.copytree(written, tmp_path / "copy"))


# ---- round trip --------------------------------------------------------------------------------


def test_layout_on_disk(written, samples):
    sample = samples[0]
    subject, study = sample.meta["patient_id"], sample.meta["study_id"]
    for view in ("frontal", "lateral"):
        folder = written / "files" / f"p{subject[:2]}" / f"p{subject}"
        path = folder / f"s{study}" / f"{sample.meta['dicom_ids'][view]}.jpg"
        assert path.is_file() and path == image_path(written, subject, study, sample.meta["dicom_ids"][view])
    assert report_path(written, subject, study) == folder / f"s{study}.txt"
    metadata = rows(written / METADATA_FILE)
    assert list(metadata[0]) == list(METADATA_COLUMNS) and len(metadata) == 2 * N
    assert [r["ViewPosition"] for r in metadata[:2]] == ["PA", "LL"] and metadata[0]["Rows"] == "32"
    chexpert = rows(written / CHEXPERT_FILE)
    assert list(chexpert[0]) == ["subject_id", "study_id", *CHEXPERT_COLUMNS]
    assert {chexpert[0][c] for c in CHEXPERT_COLUMNS if c not in CXR_CLASSES} == {""}
    assert {chexpert[0][c] for c in CXR_CLASSES} <= {"1.0", "0.0"}
    assert {r["split"] for r in rows(written / SPLIT_FILE)} <= {"train", "validate", "test"}


def test_round_trip(written, samples):
    datalist = read_dataset("mimic_cxr", written)
    assert [r["id"] for r in datalist] == [s.meta["study_id"] for s in samples]
    for record, sample in zip(datalist, samples):
        assert record["patient_id"] == sample.meta["patient_id"]
        assert record["label_name"] == list(sample.label)
        assert record["label"] == [int(c in sample.label) for c in CXR_CLASSES]
        assert record["attributes"] == sample.attributes
        assert record["text"] == sample.text and "FINDINGS:" in record["text"] and "IMPRESSION:" in record["text"]
        assert record["image"] == record["frontal"] and record["frontal_view_position"] == "PA"
        assert record["lateral_view_position"] == "LL" and record["split"] in ("train", "validate", "test")
        for view in ("frontal", "lateral"):
            pixels = np.asarray(Image.open(record[view]))
            assert pixels.shape == (32, 32) and np.abs(pixels.astype(int) - sample.images[view]).mean() < 3


def test_writes_are_byte_identical_per_seed(written, samples, tmp_path):
    again = write(get_phantom("cxr").generate_many(N, seed=0, size=32), tmp_path / "again")
    assert files(again) == files(written)
    other = files(write(get_phantom("cxr").generate_many(N, seed=1, size=32), tmp_path / "other"))
    assert set(other) != set(files(written))  # new ids, new files
    jpgs = lambda fs: sorted(v for k, v in fs.items() if k.endswith(".jpg"))  # noqa: E731
    assert not set(jpgs(other)) & set(jpgs(files(written)))


def test_reader_works_without_ground_truth_and_with_gzipped_csvs(dataset):
    (dataset / ATTRIBUTES_FILE).unlink()
    for name in (METADATA_FILE, CHEXPERT_FILE, SPLIT_FILE):  # PhysioNet ships the CSVs gzipped
        path = dataset / name
        with gzip.open(path.with_name(name + ".gz"), "wb") as f:
            f.write(path.read_bytes())
        path.unlink()
    datalist = read(dataset)
    assert len(datalist) == N and all("attributes" not in r for r in datalist)


def test_uncertain_and_blank_labels_count_as_negative(dataset):
    table = rows(dataset / CHEXPERT_FILE)
    table[0].update(
        {
            "Cardiomegaly": "-1.0",
            "Pleural Effusion": "",
            "No Finding": "",
            "Lung Opacity": "1.0",
            "Pneumothorax": "0.0",
            "Support Devices": "1",
        }
    )
    rewrite(dataset / CHEXPERT_FILE, table)
    record = read(dataset)[0]
    assert record["label_name"] == ["Lung Opacity", "Support Devices"] and record["label"] == [0, 0, 0, 1, 0, 1]


def test_real_data_view_rules(dataset):
    """PA or AP is frontal, LATERAL or LL is lateral, the first by dicom_id wins, other positions are ignored."""
    table = rows(dataset / METADATA_FILE)
    first = table[0]
    subject, study = first["subject_id"], first["study_id"]
    extra = [("00000000-ap", "AP"), ("00000001-lateral", "LATERAL"), ("00000002-axial", "AP AXIAL")]
    for dicom_id, position in extra:
        table.append({**first, "dicom_id": dicom_id, "ViewPosition": position})
        source = image_path(dataset, subject, study, first["dicom_id"])
        shutil.copy(source, image_path(dataset, subject, study, dicom_id))
    rewrite(dataset / METADATA_FILE, table)
    split = rows(dataset / SPLIT_FILE)
    rewrite(dataset / SPLIT_FILE, split + [{**split[0], "dicom_id": d} for d, _ in extra])
    record = read(dataset)[0]
    assert (record["frontal_dicom_id"], record["frontal_view_position"]) == ("00000000-ap", "AP")
    assert (record["lateral_dicom_id"], record["lateral_view_position"]) == ("00000001-lateral", "LATERAL")


def test_report_sections():
    text = (
        "                FINAL REPORT\n EXAMINATION: CHEST (PA AND LAT)\n\n"
        "FINDINGS:\n\nNo effusion.\n  Heart normal.\n\nIMPRESSION: Normal."
    )
    assert report_sections(text) == {
        "EXAMINATION": "CHEST (PA AND LAT)",
        "FINDINGS": "No effusion. Heart normal.",
        "IMPRESSION": "Normal.",
    }


# ---- bad input ---------------------------------------------------------------------------------


def test_study_without_lateral_names_the_study_and_view_position(dataset):
    table = rows(dataset / METADATA_FILE)
    study = table[2]["study_id"]
    rewrite(dataset / METADATA_FILE, [r for r in table if not (r["study_id"] == study and r["ViewPosition"] == "LL")])
    with pytest.raises(DatasetError, match=rf"{METADATA_FILE}: ViewPosition: study {study} .* no lateral image") as err:
        read(dataset)
    assert err.value.field == "ViewPosition"
    complete = [r["study_id"] for r in table[::2] if r["study_id"] != study]
    assert [r["id"] for r in read(dataset, skip_incomplete=True)] == complete


def test_study_without_frontal(dataset):
    table = rows(dataset / METADATA_FILE)
    rewrite(dataset / METADATA_FILE, [{**r, "ViewPosition": "LAO"} if r["ViewPosition"] == "PA" else r for r in table])
    with pytest.raises(DatasetError, match=r"ViewPosition: study \d+ .* no frontal image .*\['PA', 'AP'\]"):
        read(dataset)


def test_missing_image(dataset, samples):
    sample = samples[1]
    path = image_path(dataset, sample.meta["patient_id"], sample.meta["study_id"], sample.meta["dicom_ids"]["lateral"])
    path.unlink()
    with pytest.raises(DatasetError, match=rf"{path.name}: dicom_id: the lateral image .* of study .*file not found"):
        read(dataset)


def test_missing_report(dataset, samples):
    path = report_path(dataset, samples[3].meta["patient_id"], samples[3].meta["study_id"])
    path.unlink()
    with pytest.raises(DatasetError, match=rf"{path.name}: report: the report of study {samples[3].meta['study_id']}"):
        read(dataset)


@pytest.mark.parametrize("name", [METADATA_FILE, CHEXPERT_FILE, SPLIT_FILE])
def test_missing_csv(dataset, name):
    (dataset / name).unlink()
    with pytest.raises(DatasetError, match=rf"{name}: {name}: file not found \(nor {name}.gz\)"):
        read(dataset)


@pytest.mark.parametrize(
    ("name", "column"),
    [
        (METADATA_FILE, "ViewPosition"),
        (CHEXPERT_FILE, "Pneumothorax"),
        (CHEXPERT_FILE, "No Finding"),
        (SPLIT_FILE, "split"),
    ],
)
def test_missing_column(dataset, name, column):
    table = rows(dataset / name)
    rewrite(dataset / name, table, [c for c in table[0] if c != column])
    with pytest.raises(DatasetError, match=rf"{name}: {column}: required column missing"):
        read(dataset)


def test_missing_label_row_and_bad_label_value(dataset):
    table = rows(dataset / CHEXPERT_FILE)
    rewrite(dataset / CHEXPERT_FILE, table[1:])
    with pytest.raises(DatasetError, match=rf"{CHEXPERT_FILE}: study_id: a row for study {table[0]['study_id']}"):
        read(dataset)
    assert len(read(dataset, skip_incomplete=True)) == N - 1
    table[0]["Cardiomegaly"] = "yes"
    rewrite(dataset / CHEXPERT_FILE, table)
    with pytest.raises(DatasetError, match=r"Cardiomegaly: study \d+: expected 1.0, 0.0, -1.0 or empty, got 'yes'"):
        read(dataset)


def test_frontal_missing_from_split(dataset):
    split = rows(dataset / SPLIT_FILE)
    rewrite(dataset / SPLIT_FILE, split[2:])
    with pytest.raises(DatasetError, match=rf"{SPLIT_FILE}: dicom_id: a row for dicom_id {split[0]['dicom_id']}"):
        read(dataset)


def test_writer_rejects_other_kinds_and_repeated_studies(samples, tmp_path):
    with pytest.raises(ValueError, match="expected 'cxr' samples, got a 'derm' sample"):
        write([type(samples[0])("derm", 0, 0, {}, "NV", {}, "")], tmp_path / "a")
    with pytest.raises(ValueError, match=f"study id {samples[0].meta['study_id']} appears twice"):
        write_dataset("cxr", [samples[0], samples[0]], tmp_path / "b")
