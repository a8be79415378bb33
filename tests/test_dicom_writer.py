"""DICOM out: Secondary Capture, MR series (geometry checked against ITK), Basic Text SR, synthetic marking,
de-identification, OutputWriter's dicom format, dciodvfy."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from medgen_monai.io import OutputWriter
from medgen_monai.io.dicom.marking import (
    ALLOWED_FROM_INPUT,
    Provenance,
    deidentified_reference,
    marking_problems,
    synthetic_patient,
)
from medgen_monai.io.dicom.validation import DCIODVFY_INSTALL, dciodvfy, find_dciodvfy, write_examples
from medgen_monai.io.dicom.writer import (
    DicomStudyIds,
    write_basic_text_sr,
    write_mr_series,
    write_secondary_capture,
)

PROVENANCE = Provenance("ldm_label_derm", "0.1.0", 7, "diffusion.pt:" + "ab" * 32)
SOURCE_KEYWORDS = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "InstitutionName",
    "AccessionNumber",
    "StudyInstanceUID",
    "ReferringPhysicianName",
    "StudyDate",
)


def _oblique_affine() -> np.ndarray:
    """Voxel -> RAS: rotated about two axes, anisotropic spacing, an offset."""
    a, b = np.deg2rad(20.0), np.deg2rad(-35.0)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rz @ rx @ np.diag([0.7, 1.1, 2.5])
    affine[:3, 3] = [-12.5, 30.25, 7.0]
    return affine


def _all_text(ds: pydicom.Dataset) -> list[str]:
    """The string form of every element value, sequences walked, file meta included."""
    out = []
    for dataset in (ds.file_meta, ds):
        for element in dataset.iterall():
            if element.VR not in ("SQ", "OB", "OW", "UN"):
                out.append(str(element.value))
    return out


def _read_series(files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """An independent rebuild: slices sorted by position along the normal -> (X, Y, Z) array and voxel -> RAS."""
    slices = [pydicom.dcmread(f) for f in files]
    row, col = (
        np.array(slices[0].ImageOrientationPatient[:3], float),
        np.array(slices[0].ImageOrientationPatient[3:], float),
    )
    normal = np.cross(row, col)
    slices.sort(key=lambda s: float(np.array(s.ImagePositionPatient, float) @ normal))
    positions = np.array([s.ImagePositionPatient for s in slices], float)
    array = np.stack([s.pixel_array.T * float(s.RescaleSlope) + float(s.RescaleIntercept) for s in slices], axis=2)
    row_spacing, col_spacing = (float(v) for v in slices[0].PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = row * col_spacing, col * row_spacing
    lps[:3, 2] = (positions[-1] - positions[0]) / (len(slices) - 1)
    lps[:3, 3] = positions[0]
    return array, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def test_secondary_capture_gray_and_rgb_pixels_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for shape, photometric in (((9, 13), "MONOCHROME2"), ((9, 13, 3), "RGB")):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        path = write_secondary_capture(image, tmp_path / f"{photometric}.dcm", PROVENANCE, instance_number=3)
        ds = pydicom.dcmread(path)
        np.testing.assert_array_equal(ds.pixel_array, image)
        assert ds.PhotometricInterpretation == photometric and ds.ConversionType == "SYN"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.InstanceNumber == 3
        assert marking_problems(ds) == []
    assert not list(tmp_path.glob(".*"))  # nothing temporary left
    with pytest.raises(ValueError, match="uint8"):
        write_secondary_capture(np.zeros((4, 4), np.float32), tmp_path / "bad.dcm", PROVENANCE)


def test_mr_series_geometry_and_values_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    volume = rng.random((7, 5, 4)) * 3.0 - 1.0
    affine = _oblique_affine()
    files = write_mr_series(volume, affine, tmp_path / "vol_dcm", PROVENANCE, value_range=(-1.0, 2.0))
    assert len(files) == 4 and sorted(tmp_path.iterdir()) == [tmp_path / "vol_dcm"]
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and (ds.Rows, ds.Columns) == (5, 7)
    assert float(ds.SliceThickness) == pytest.approx(2.5) and float(ds.SpacingBetweenSlices) == pytest.approx(2.5)
    slices = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    for keyword in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SeriesTime"):
        assert len({str(s.get(keyword)) for s in slices}) == 1, keyword
    assert [s.InstanceNumber for s in slices] == [1, 2, 3, 4] and len({s.SOPInstanceUID for s in slices}) == 4
    array, rebuilt = _read_series(list(reversed(files)))
    quantum = 3.0 / 65535
    np.testing.assert_allclose(array, volume, atol=quantum)
    np.testing.assert_allclose(rebuilt, affine, atol=1e-4)
    # clipping to value_range
    clipped = write_mr_series(np.full((2, 2, 2), 5.0), np.eye(4), tmp_path / "clip", PROVENANCE)
    assert np.allclose(_read_series(clipped)[0], 1.0, atol=1 / 65535)


def test_mr_series_matches_itk(tmp_path):
    from monai.transforms import LoadImage

    rng = np.random.default_rng(2)
    volume = rng.random((8, 6, 5)).astype(np.float32)
    affine = _oblique_affine()
    write_mr_series(volume, affine, tmp_path / "itk", PROVENANCE)
    image = LoadImage(reader="ITKReader", image_only=True)(str(tmp_path / "itk"))
    np.testing.assert_allclose(np.asarray(image.affine), affine, atol=1e-4)  # MONAI reports RAS
    np.testing.assert_allclose(np.asarray(image), volume, atol=1 / 65535 + 1e-6)


def test_mr_series_rejects_bad_input(tmp_path):
    sheared = np.eye(4)
    sheared[0, 2] = 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        write_mr_series(np.zeros((2, 2, 2)), sheared, tmp_path / "s", PROVENANCE)
    with pytest.raises(ValueError, match="4x4"):
        write_mr_series(np.zeros((2, 2, 2)), np.eye(3), tmp_path / "s", PROVENANCE)
    with pytest.raises(ValueError, match=r"\(X, Y, Z\)"):
        write_mr_series(np.zeros((2, 2)), np.eye(4), tmp_path / "s", PROVENANCE)
    assert not list(tmp_path.iterdir())


def test_basic_text_sr_round_trip(tmp_path):
    text = "Synthetic report.\nNo acute findings; lesion 4 mm, façade."
    ds = pydicom.dcmread(write_basic_text_sr(text, tmp_path / "r.dcm", PROVENANCE))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11" and ds.Modality == "SR" and ds.ValueType == "CONTAINER"
    assert [item.TextValue for item in ds.ContentSequence] == [text]
    assert marking_problems(ds) == []
    with pytest.raises(ValueError, match="non-empty"):
        write_basic_text_sr("  ", tmp_path / "e.dcm", PROVENANCE)


def test_every_file_is_marked_fresh_and_free_of_source_identifiers(tmp_path):
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    reference = deidentified_reference(source)
    assert set(reference) <= set(ALLOWED_FROM_INPUT) and "StudyDate" not in reference
    patient = {**synthetic_patient("TEST"), **reference}
    files = [
        write_secondary_capture(np.zeros((4, 5), np.uint8), tmp_path / "g.dcm", PROVENANCE, patient),
        write_secondary_capture(np.zeros((4, 5, 3), np.uint8), tmp_path / "c.dcm", PROVENANCE, patient),
        *write_mr_series(np.zeros((3, 3, 2)), np.eye(4), tmp_path / "mr", PROVENANCE, patient),
        write_basic_text_sr("text", tmp_path / "r.dcm", PROVENANCE, patient),
    ]
    datasets = [pydicom.dcmread(f) for f in files]
    forbidden = {k: str(source.get(k)) for k in SOURCE_KEYWORDS if str(source.get(k) or "")}
    assert "PatientName" in forbidden and "StudyInstanceUID" in forbidden  # the check below is not vacuous
    for path, ds in zip(files, datasets):
        assert marking_problems(ds) == [], path
        assert str(ds.PatientName).startswith("SYNTHETIC") and ds.PatientID.startswith("TEST")
        assert ds.PatientAge == source.PatientAge and ds.PatientSex == source.PatientSex
        assert PROVENANCE.derivation_description == ds.DerivationDescription and "seed 7" in ds.DerivationDescription
        values = _all_text(ds)
        leaked = {k: v for k, v in forbidden.items() if any(v in value for value in values)}
        assert not leaked, f"{path.name} carries {leaked}"
    sop_uids = [ds.SOPInstanceUID for ds in datasets]
    assert len(set(sop_uids)) == len(sop_uids)
    # no study given: every call starts a fresh study (the MR slices share theirs)
    assert len({ds.StudyInstanceUID for ds in datasets}) == 4 and len({ds.SeriesInstanceUID for ds in datasets}) == 4


def test_deidentified_reference_allow_list():
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientSex = "Doe^Jane", "123", "F"
    ds.PatientBirthDate, ds.StudyDate, ds.BodyPartExamined = "19300615", "20240614", "CHEST"
    ds.InstitutionName = "General Hospital"
    assert deidentified_reference(ds) == {"PatientSex": "F", "PatientAge": "090Y", "BodyPartExamined": "CHEST"}
    assert deidentified_reference(ds, date_shift_days=-14)["StudyDate"] == "20240531"
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):  # free text where a code string belongs
        ds.BodyPartExamined = "knee, fell"
    ds.PatientAge, ds.PatientSex, ds.ImageLaterality = "018M", "X", "B"
    assert deidentified_reference(ds) == {"PatientAge": "001Y", "Laterality": ""}
    with pytest.warns(UserWarning, match="Invalid value for VR CS"):
        ds.Laterality = "r"
    assert deidentified_reference(ds)["Laterality"] == "R"
    with pytest.raises(ValueError, match="may not be written"):
        write_secondary_capture(
            np.zeros((2, 2), np.uint8),
            "/nonexistent/x.dcm",
            PROVENANCE,
            {**synthetic_patient(), "InstitutionName": "General Hospital"},
        )
    with pytest.raises(ValueError, match="letters and digits"):
        synthetic_patient("SYN-")
    first, second = synthetic_patient(), synthetic_patient()
    assert first["PatientID"] != second["PatientID"] and first["PatientName"].startswith("SYNTHETIC^")


def test_study_ids_are_shared_when_given(tmp_path):
    study = DicomStudyIds.new()
    a = pydicom.dcmread(
        write_secondary_capture(np.zeros((2, 2), np.uint8), tmp_path / "a.dcm", PROVENANCE, study=study)
    )
    b = pydicom.dcmread(
        write_secondary_capture(
            np.zeros((2, 2), np.uint8), tmp_path / "b.dcm", PROVENANCE, study=study, instance_number=2
        )
    )
    assert a.StudyInstanceUID == b.StudyInstanceUID == study.study_uid and a.SeriesInstanceUID == b.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID and a.StudyDate == study.study_date
    other = study.new_series(2)
    assert other.study_uid == study.study_uid and other.series_uid != study.series_uid
    assert DicomStudyIds.from_dict(json.loads(json.dumps(study.to_dict()))) == study


def test_output_writer_png_and_dicom_2d_share_one_study_across_reruns(tmp_path):
    bundle = {"name": "ldm_label_derm", "version": "0.1.0", "weights_sha256": {"diffusion.pt": "cd" * 32}}
    options = {"patient_id_prefix": "SYN", "reference": {"PatientSex": "F"}}
    images = torch.rand(3, 3, 8, 8) * 2 - 1
    records = [{"id": f"s{i}", "seed": i, "report": f"report {i}" if i == 1 else None} for i in range(3)]
    writer = OutputWriter(tmp_path, formats="png,dicom", bundle=bundle, value_range=(-1, 1), dicom=options)
    writer.write(images[:2], records[:2])
    (tmp_path / "s1.json").unlink()  # an interrupted run: s1 is redone on the rerun
    rerun = OutputWriter(tmp_path, formats="png,dicom", bundle=bundle, value_range=(-1, 1), dicom=options)
    assert [r["id"] for r in rerun.pending(records)] == ["s1", "s2"]
    rerun.write(images[1:], records[1:])
    datasets = {}
    for i in range(3):
        ds = datasets[i] = pydicom.dcmread(tmp_path / f"s{i}.dcm")
        np.testing.assert_array_equal(ds.pixel_array, np.asarray(Image.open(tmp_path / f"s{i}.png")))
        assert marking_problems(ds) == [] and ds.PatientSex == "F" and f"seed {i}" in ds.DerivationDescription
        assert "diffusion.pt:" + "cd" * 32 in ds.DerivationDescription
        sidecar = json.loads((tmp_path / f"s{i}.json").read_text())
        assert sidecar["dicom"]["sop_instance_uids"] == [ds.SOPInstanceUID]
        assert sidecar["dicom"]["series_uid"] == ds.SeriesInstanceUID and sidecar["files"]["dicom"] == f"s{i}.dcm"
    assert len({ds.StudyInstanceUID for ds in datasets.values()}) == 1
    assert len({ds.SeriesInstanceUID for ds in datasets.values()}) == 1
    assert len({str(ds.PatientID) for ds in datasets.values()}) == 1
    assert [datasets[i].InstanceNumber for i in range(3)] == [1, 3, 4]  # write order; s1 was written twice
    report = pydicom.dcmread(tmp_path / "s1_report.dcm")
    assert report.ContentSequence[0].TextValue == "report 1" and report.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert report.SeriesInstanceUID != datasets[0].SeriesInstanceUID and not (tmp_path / "s0_report.dcm").exists()
    assert (
        json.loads((tmp_path / "s1.json").read_text())["dicom"]["report"]["sop_instance_uid"] == report.SOPInstanceUID
    )
    with pytest.raises(ValueError, match="new folder"):
        OutputWriter(tmp_path, formats="dicom", dicom={"reference": {"PatientSex": "M"}}).write(images[:1], records[:1])


def test_output_writer_nifti_and_dicom_3d(tmp_path):
    affine = _oblique_affine()
    volumes = torch.rand(2, 1, 6, 5, 3)
    writer = OutputWriter(tmp_path, formats="nifti,dicom", affine=affine)
    paths = writer.write(volumes, [{"id": "v0", "seed": 0}, {"id": "v1", "seed": 1, "affine": np.eye(4)}])
    assert paths[0]["dicom"] == tmp_path / "v0_dcm" and writer.is_done({"id": "v0", "seed": 0})
    array, rebuilt = _read_series(sorted((tmp_path / "v0_dcm").iterdir()))
    nifti = nib.load(tmp_path / "v0.nii.gz")
    np.testing.assert_allclose(array, nifti.get_fdata(), atol=1 / 65535 + 1e-6)
    np.testing.assert_allclose(rebuilt, nifti.affine, atol=1e-4)
    np.testing.assert_allclose(_read_series(sorted((tmp_path / "v1_dcm").iterdir()))[1], np.eye(4), atol=1e-6)
    first, second = (pydicom.dcmread(next((tmp_path / f"v{i}_dcm").iterdir())) for i in range(2))
    assert first.StudyInstanceUID == second.StudyInstanceUID and first.SeriesInstanceUID != second.SeriesInstanceUID
    sidecar = json.loads((tmp_path / "v0.json").read_text())
    assert len(sidecar["dicom"]["sop_instance_uids"]) == 3 and sidecar["files"]["dicom"] == "v0_dcm"
    assert json.loads((tmp_path / "dicom_study.json").read_text())["images"]["study_uid"] == first.StudyInstanceUID


def test_output_writer_rejects_bad_dicom_options(tmp_path):
    with pytest.raises(ValueError, match="not allowed"):
        OutputWriter(tmp_path, formats="dicom", dicom={"reference": {"PatientName": "Doe^Jane"}})
    with pytest.raises(ValueError, match="unknown options"):
        OutputWriter(tmp_path, formats="dicom", dicom={"prefix": "X"})
    with pytest.raises(ValueError, match="one channel"):
        OutputWriter(tmp_path, formats="dicom").write(torch.rand(1, 2, 4, 4, 4), [{"id": "a", "seed": 0}])


def test_dciodvfy_zero_errors(tmp_path):
    """Every kind of file the project writes passes dciodvfy without an error (a missing dciodvfy fails: `make test`
    installs it). The warnings left are listed in docs/dicom.md by docs/build_docs.py."""
    if find_dciodvfy() is None:
        pytest.fail(f"dciodvfy is missing: {DCIODVFY_INSTALL}", pytrace=False)
    files = write_examples(tmp_path)
    patient = {**synthetic_patient(), "PatientSex": "F", "PatientAge": "045Y", "BodyPartExamined": "CHEST"}
    files["MR slice (oblique, conditioned)"] = write_mr_series(
        np.random.default_rng(3).random((6, 5, 3)), _oblique_affine(), tmp_path / "mr_oblique", PROVENANCE, patient
    )[1]
    reports = {kind: dciodvfy(path) for kind, path in files.items()}
    errors = [f"{kind}: {line}" for kind, r in reports.items() for line in r.errors]
    warnings = [f"{kind}: {line}" for kind, r in reports.items() for line in r.warnings]
    assert not errors, "\n".join(errors + ["warnings:"] + warnings)
    # dciodvfy really checks: a file with the marking's required attribute emptied is an error
    broken = pydicom.dcmread(files["secondary capture (grayscale)"])
    del broken.ConversionType
    broken.save_as(tmp_path / "broken.dcm")
    assert any(
        "Conversion Type" in line or "ConversionType" in line for line in dciodvfy(tmp_path / "broken.dcm").errors
    )
