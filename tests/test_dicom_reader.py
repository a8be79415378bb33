"""DICOM in: files validated, series sorted by position with exact oblique geometry, bad input refused with the
reason, a study's conditioning, and MONAI LoadImage (checked against MONAI's own ITKReader)."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from medgen_monai.errors import DicomError
from medgen_monai.io.dicom.reader import (
    DicomSeriesReader,
    conditioning_from_study,
    patient_age,
    patient_sex,
    read_dicom,
    read_image_2d,
    read_series,
    read_study,
    report_text,
)

# An oblique, anisotropic grid: rows along (cos t, sin t, 0), columns along (-sin t cos u, cos t cos u, sin u) (LPS),
# 0.8 mm between columns, 1.2 mm between rows, 3.0 mm between slices.
_T, _U = np.deg2rad(20.0), np.deg2rad(15.0)
ROW_DIR = np.array([np.cos(_T), np.sin(_T), 0.0])
COL_DIR = np.array([-np.sin(_T) * np.cos(_U), np.cos(_T) * np.cos(_U), np.sin(_U)])
NORMAL = np.cross(ROW_DIR, COL_DIR)
COL_SPACING, ROW_SPACING, STEP = 0.8, 1.2, 3.0
ORIGIN = np.array([-40.0, 25.0, 12.5])
SLOPE, INTERCEPT = 0.5, -100.0


def _expected_affine(nz_first: int = 0) -> np.ndarray:
    lps = np.eye(4)
    lps[:3, 0] = ROW_DIR * COL_SPACING
    lps[:3, 1] = COL_DIR * ROW_SPACING
    lps[:3, 2] = NORMAL * STEP
    lps[:3, 3] = ORIGIN + nz_first * STEP * NORMAL
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _mr_slice(
    volume_u16: np.ndarray,
    k: int,
    series_uid: str,
    study_uid: str,
    frame_uid: str,
    *,
    position: np.ndarray | None = None,
    row_dir=ROW_DIR,
    col_dir=COL_DIR,
    instance: int | None = None,
) -> Dataset:
    """One MR Image Storage slice k of a uint16 (X, Y, Z) volume: pixel row r, column c = volume[c, r, k]."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
    ds.Modality, ds.PatientName, ds.PatientID = "MR", "TEST^READER", "R1"
    ds.PatientSex, ds.PatientAge, ds.StudyDate = "F", "045Y", "20240102"
    ds.SeriesNumber, ds.InstanceNumber = 1, instance if instance is not None else k + 1
    ds.ImageOrientationPatient = [f"{v:.10f}" for v in (*row_dir, *col_dir)]
    pos = ORIGIN + k * STEP * NORMAL if position is None else position
    ds.ImagePositionPatient = [f"{v:.10f}" for v in pos]
    ds.PixelSpacing = [ROW_SPACING, COL_SPACING]  # [between rows, between columns]
    ds.SliceThickness = STEP
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = SLOPE, INTERCEPT, "US"
    pixels = np.ascontiguousarray(volume_u16[:, :, k].T)  # (rows, columns)
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = pixels.tobytes()
    return ds


def _write_series(
    folder: Path,
    volume_u16: np.ndarray,
    *,
    skip: tuple[int, ...] = (),
    seed: int = 0,
    series_uid: str | None = None,
    study_uid: str | None = None,
    prefix: str = "",
) -> list[Path]:
    """Write the slices under shuffled names and shuffled InstanceNumbers (neither may be used for sorting)."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, study_uid, frame_uid = series_uid or generate_uid(), study_uid or generate_uid(), generate_uid()
    order = [k for k in range(volume_u16.shape[2]) if k not in skip]
    names = list(range(len(order)))
    random.Random(seed).shuffle(names)
    paths = []
    for name, k in zip(names, order):
        ds = _mr_slice(volume_u16, k, series_uid, study_uid, frame_uid, instance=len(order) - name)
        path = folder / f"{prefix}{name:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def volume_u16() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 4000, size=(7, 5, 6), dtype=np.uint16)  # X=7 columns, Y=5 rows, Z=6 slices


def test_series_oblique_geometry_shuffled(tmp_path, volume_u16):
    _write_series(tmp_path / "s", volume_u16, seed=3)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM: skipped in a folder")
    vol = read_series(tmp_path / "s")
    assert vol.array.dtype == np.float32 and vol.array.shape == (7, 5, 6)
    np.testing.assert_allclose(vol.array, volume_u16.astype(np.float32) * SLOPE + INTERCEPT)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-6)
    np.testing.assert_allclose(vol.spacing, (COL_SPACING, ROW_SPACING, STEP), atol=1e-6)
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in vol.files] != list(range(1, 7))  # sorted by position
    assert "PixelData" not in vol.first and vol.first.SeriesInstanceUID == vol.series_uid
    # voxel (c, r, k) of the array sits where the DICOM pixel (row r, column c) of slice k is
    c, r, k = 6, 3, 4
    lps = ORIGIN + k * STEP * NORMAL + c * COL_SPACING * ROW_DIR + r * ROW_SPACING * COL_DIR
    np.testing.assert_allclose(vol.affine @ [c, r, k, 1], [-lps[0], -lps[1], lps[2], 1], atol=1e-6)
    # a list of files in any order gives the same volume
    files = list(vol.files)
    random.Random(1).shuffle(files)
    np.testing.assert_array_equal(read_series(files).array, vol.array)


def test_single_slice_uses_slice_thickness(tmp_path, volume_u16):
    path = _write_series(tmp_path, volume_u16[:, :, :1])[0]
    vol = read_series(path)
    assert vol.array.shape == (7, 5, 1)
    np.testing.assert_allclose(vol.affine, _expected_affine(), atol=1e-6)


def test_missing_slice_refused_naming_the_gap(tmp_path, volume_u16):
    _write_series(tmp_path, volume_u16, skip=(3,))
    before = np.round(ORIGIN + 2 * STEP * NORMAL, 3).tolist()
    with pytest.raises(DicomError, match=r"ImagePositionPatient: .*6 mm gap between .*missing slices") as err:
        read_series(tmp_path)
    assert str(before) in str(err.value) and str(tmp_path) in str(err.value)


def test_mixed_orientation_refused(tmp_path, volume_u16):
    paths = _write_series(tmp_path, volume_u16)
    ds = pydicom.dcmread(paths[2])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.save_as(paths[2])
    with pytest.raises(DicomError, match="ImageOrientationPatient: .*mixed orientations"):
        read_series(tmp_path)


def test_two_series_in_one_folder_refused(tmp_path, volume_u16):
    study = generate_uid()
    _write_series(tmp_path, volume_u16, study_uid=study, prefix="a")
    _write_series(tmp_path, volume_u16, study_uid=study, prefix="b")
    with pytest.raises(DicomError, match=r"SeriesInstanceUID: one series, found 2"):
        read_series(tmp_path)


def test_differing_grid_and_empty_folder_refused(tmp_path, volume_u16):
    paths = _write_series(tmp_path / "s", volume_u16)
    ds = pydicom.dcmread(paths[0])
    ds.PixelSpacing = [1.0, 1.0]
    ds.save_as(paths[0])
    with pytest.raises(DicomError, match=rf"{paths[0].name}: PixelSpacing: \[1.2, 0.8\] as in"):
        read_series(tmp_path / "s")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(DicomError, match=r"empty: series: DICOM image files; skipped 1: a.png \(not DICOM\)"):
        read_series(tmp_path / "empty")


def _undecodable_compressed_file() -> tuple[str, str]:
    """One of pydicom's compressed test files whose transfer syntax no installed package decodes (name, syntax)."""
    from pydicom.pixels import get_decoder

    for name in ("SC_rgb_jpeg_gdcm.dcm", "JPEG2000.dcm", "JPEGLSNearLossless_16.dcm"):
        path = get_testdata_file(name)
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if path and not get_decoder(syntax).is_available:
            return name, syntax.name
    pytest.skip("every compressed pydicom test file here has a decoder installed")


@pytest.mark.parametrize(
    "name, function, reason",
    [
        ("MR_truncated.dcm", read_dicom, r"PixelData: 8192 bytes .* found 8130: the file is truncated"),
        ("MR_truncated.dcm", read_series, r"PixelData: .* truncated"),
        ("no_meta.dcm", read_dicom, r"file meta: a DICOM Part 10 file .* no 'DICM' prefix"),
        ("badVR.dcm", read_dicom, r"NumberOfFrames: an integer string \(VR IS\), got '1A'"),
        ("rtplan.dcm", read_image_2d, r"PixelData: an image, found RT Plan Storage \(1.2.840.10008.5.1.4.1.1.481.5\)"),
        ("rtplan.dcm", read_series, r"an image, found RT Plan Storage"),
    ],
)
def test_pydicom_bad_files_give_one_clear_error(name, function, reason):
    path = get_testdata_file(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns on badVR.dcm; the error is what counts
        with pytest.raises(DicomError, match=reason) as err:
            function(path)
    assert str(err.value).startswith(f"{path}: ")


def test_rtplan_is_a_valid_file_but_not_an_image():
    ds = read_dicom(get_testdata_file("rtplan.dcm"))  # headers are fine
    assert ds.Modality == "RTPLAN"
    with pytest.raises(DicomError, match="an image, found RT Plan Storage"):
        read_dicom(get_testdata_file("rtplan.dcm"), image=True)


def test_compressed_without_decoder_names_syntax_and_packages():
    name, syntax = _undecodable_compressed_file()
    path = get_testdata_file(name)
    assert read_dicom(path).file_meta.TransferSyntaxUID.name == syntax  # the header reads; the pixels cannot
    for function in (read_image_2d, read_series):
        with pytest.raises(
            DicomError,
            match=r"TransferSyntaxUID: pixel data in .*which no installed package decodes: "
            r"install one of: .*(pylibjpeg|gdcm)",
        ) as err:
            function(path)
        assert syntax in str(err.value) and str(err.value).startswith(path)


def test_not_dicom_and_missing_path(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    with pytest.raises(DicomError, match=r"photo.png: file meta: a DICOM Part 10 file .*found a PNG image"):
        read_dicom(png)
    with pytest.raises(DicomError, match=r"nothere.dcm: file: an existing DICOM file"):
        read_dicom(tmp_path / "nothere.dcm")
    with pytest.raises(DicomError, match=r"nothere: series: an existing folder"):
        read_series(tmp_path / "nothere")


def test_image_2d_as_stored():
    mr = read_image_2d(get_testdata_file("MR_small.dcm"))
    assert mr.shape == (64, 64)
    rgb = read_image_2d(get_testdata_file("SC_rgb_rle.dcm"))  # RLE: decoded by pydicom itself
    assert rgb.shape == (100, 100, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0], [255, 0, 0])  # pydicom's SC_rgb: top band red


def _basic_text_sr(path: Path, study_uid: str, text: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, generate_uid(), "SR"
    ds.PatientName, ds.PatientID, ds.PatientSex, ds.PatientBirthDate, ds.StudyDate = (
        "TEST^SR",
        "R1",
        "F",
        "19790101",
        "20240102",
    )

    def code(value: str, meaning: str) -> DicomSequence:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        return DicomSequence([item])

    def text_item(value: str) -> Dataset:
        item = Dataset()
        item.RelationshipType, item.ValueType, item.ConceptNameCodeSequence = (
            "CONTAINS",
            "TEXT",
            code("121071", "Finding"),
        )
        item.TextValue = value
        return item

    section = Dataset()
    section.RelationshipType, section.ValueType, section.ContinuityOfContent = "CONTAINS", "CONTAINER", "SEPARATE"
    section.ConceptNameCodeSequence = code("121070", "Findings")
    section.ContentSequence = DicomSequence([text_item(text.split("\n")[1])])
    ds.ValueType, ds.ContinuityOfContent, ds.ConceptNameCodeSequence = (
        "CONTAINER",
        "SEPARATE",
        code("11528-7", "Report"),
    )
    ds.ContentSequence = DicomSequence([text_item(text.split("\n")[0]), section])
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_study_conditioning(tmp_path, volume_u16):
    study = generate_uid()
    _write_series(tmp_path / "mr", volume_u16, study_uid=study)
    sr = _basic_text_sr(tmp_path / "report" / "sr.dcm", study, "Small lesion in the left lobe.\nNo effusion.")
    assert report_text(pydicom.dcmread(sr)) == "Small lesion in the left lobe.\nNo effusion."
    with pytest.raises(DicomError, match="SOPClassUID: a structured report .*found MR Image Storage"):
        report_text(pydicom.dcmread(next((tmp_path / "mr").iterdir())))
    got = read_study(tmp_path)
    assert got.study_uid == study and len(got.series) == 2 and len(got.images) == 1
    assert got.reports == ["Small lesion in the left lobe.\nNo effusion."]
    try:
        from medgen_monai.io.dicom.marking import deidentified_reference  # noqa: F401  (helper A, written alongside)
    except ImportError:
        pytest.skip("medgen_monai.io.dicom.marking.deidentified_reference is not written yet: rerun this test later")
    cond = conditioning_from_study(got)
    assert cond["report"] == "Small lesion in the left lobe.\nNo effusion." and cond["sex"] == "F"
    assert cond["age"] == pytest.approx(45.0)  # PatientAge 045Y of the first instance (an MR slice)
    assert len(cond["images"]) == 1 and cond["images"][0].array.shape == (7, 5, 6)
    assert "PatientName" not in cond["reference"] and "PatientID" not in cond["reference"]
    assert cond["reference"].get("PatientSex") == "F"


@pytest.mark.parametrize(
    "attributes, years",
    [
        ({"PatientAge": "045Y"}, 45.0),
        ({"PatientAge": "006M"}, 0.5),
        ({"PatientAge": "010W"}, 70 / 365.25),
        ({"PatientAge": "003D"}, 3 / 365.25),
        ({"PatientBirthDate": "19790102", "StudyDate": "20240102"}, 16436 / 365.25),
        ({}, None),
    ],
)
def test_patient_age(attributes, years):
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    assert patient_age(ds) == (pytest.approx(years) if years is not None else None)


def test_bad_age_and_sex_refused():
    ds = Dataset()
    ds.PatientAge, ds.PatientSex = "45", "X"
    with pytest.raises(DicomError, match=r"PatientAge: nnnD, nnnW, nnnM or nnnY .*got '45'"):
        patient_age(ds)
    with pytest.raises(DicomError, match="PatientSex: M, F or O, got 'X'"):
        patient_sex(ds)
    ds.PatientSex = ""
    assert patient_sex(ds) is None


def test_monai_load_image_matches_read_series_and_itk(tmp_path, volume_u16):
    from monai.transforms import LoadImage

    _write_series(tmp_path, volume_u16, seed=5)
    vol = read_series(tmp_path)
    reader = DicomSeriesReader()
    assert reader.verify_suffix(str(tmp_path)) and reader.verify_suffix([str(tmp_path / "000.dcm")])
    assert not reader.verify_suffix("image.nii.gz")
    img = LoadImage(reader=reader, image_only=True)(tmp_path)
    assert tuple(img.shape) == (7, 5, 6)
    np.testing.assert_allclose(img.numpy(), vol.array)
    np.testing.assert_allclose(img.affine.numpy(), vol.affine, atol=1e-6)
    assert np.isnan(img.meta["original_channel_dim"]) and tuple(img.meta["spatial_shape"]) == (7, 5, 6)
    # an independent reader: MONAI's ITKReader (GDCM sorts by position too, LPS -> RAS)
    itk = LoadImage(reader="ITKReader", image_only=True)(tmp_path)
    np.testing.assert_allclose(itk.affine.numpy(), vol.affine, atol=1e-4)
    np.testing.assert_allclose(itk.numpy(), vol.array, atol=1e-3)


def test_series_per_file_pixel_errors_and_duplicate_positions(tmp_path, volume_u16):
    paths = _write_series(tmp_path / "t", volume_u16)
    paths[4].write_bytes(paths[4].read_bytes()[:-20])  # cut the pixel data of one slice short
    with pytest.raises(DicomError, match=rf"{paths[4].name}: PixelData: .*truncated"):
        read_series(tmp_path / "t")
    paths = _write_series(tmp_path / "d", volume_u16)
    ds = pydicom.dcmread(paths[1])
    ds.ImagePositionPatient = pydicom.dcmread(paths[0]).ImagePositionPatient
    ds.save_as(paths[1])
    with pytest.raises(DicomError, match=r"ImagePositionPatient: one slice per position, found .* both at"):
        read_series(tmp_path / "d")


def test_monai_reader_single_files():
    from monai.transforms import LoadImage

    load = LoadImage(reader=DicomSeriesReader(), image_only=True)
    mr_path = get_testdata_file("MR_small.dcm")  # one slice with a position: a (X, Y, 1) volume like read_series
    mr = load(mr_path)
    np.testing.assert_allclose(mr.affine.numpy(), read_series(mr_path).affine)
    assert tuple(mr.shape) == (64, 64, 1)
    rgb = load(get_testdata_file("SC_rgb_rle.dcm"))  # no patient geometry: a 2D image, spatial first, channel last
    assert tuple(rgb.shape) == (100, 100, 3) and rgb.meta["original_channel_dim"] == -1
    np.testing.assert_array_equal(rgb.numpy().transpose(1, 0, 2), read_image_2d(get_testdata_file("SC_rgb_rle.dcm")))


def test_round_trip_with_the_writer(tmp_path):
    """write_mr_series (helper A) -> read_series gives the array within one quantum and the same oblique affine."""
    try:
        from medgen_monai.io.dicom.marking import Provenance
        from medgen_monai.io.dicom.writer import write_basic_text_sr, write_mr_series
    except ImportError as err:
        pytest.skip(f"the DICOM writer is not importable yet ({err}): rerun once medgen_monai.io.dicom.writer lands")
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ _expected_affine()  # any orthogonal grid; this one is oblique
    volume = np.random.default_rng(1).random((7, 5, 6))
    provenance = Provenance("test_bundle", "0.1.0", 3)
    write_mr_series(volume, affine, tmp_path / "mr", provenance)
    vol = read_series(tmp_path / "mr")
    np.testing.assert_allclose(vol.array, volume, atol=1.0 / 65535 + 1e-6)
    np.testing.assert_allclose(vol.affine, affine, atol=1e-4)
    sr = write_basic_text_sr("No acute findings.", tmp_path / "report.dcm", provenance)
    assert report_text(read_dicom(sr)) == "No acute findings."
