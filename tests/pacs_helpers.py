"""An identifiable input study for the PACS tests: what must never reach a synthetic output."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

#: what identifies the input's patient and visit: none of it may reach the PACS in a synthetic instance.
IDENTIFYING = {
    "PatientName": "Doe^Jane",
    "PatientID": "MRN-4711-0815",
    "PatientBirthDate": "19770412",
    "InstitutionName": "Saint Example Hospital",
    "AccessionNumber": "ACC-98765",
    "ReferringPhysicianName": "Smith^John",
    "StudyID": "STUDY-0042",
    "StudyDate": "20010203",
}


def identify(ds: Dataset) -> None:
    for keyword, value in IDENTIFYING.items():
        setattr(ds, keyword, value)
    ds.PatientSex = "F"
    ds.PatientAge = "046Y"
    ds.StudyTime = "101500"


def identifiable_study(folder: Path, report: str) -> tuple[str, list[str], list[Path]]:
    """An RGB secondary capture and a Basic Text SR holding ``report`` of one identifiable study; (study UID, its UIDs,
    files)."""
    folder.mkdir(parents=True)
    study_uid = generate_uid()
    rng = np.random.default_rng(0)
    image = hd.sc.SCImage(
        pixel_array=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=generate_uid(),
        series_number=1,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Dermatoscope Inc",
        patient_orientation=("L", "F"),
    )
    identify(image)
    image.BodyPartExamined = "SKIN"
    image_path = folder / "image.dcm"
    image.save_as(image_path, enforce_file_format=True)

    sr = Dataset()
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    sr.SOPInstanceUID = generate_uid()
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sr.SOPClassUID = sr.file_meta.MediaStorageSOPClassUID
    sr.StudyInstanceUID, sr.SeriesInstanceUID = study_uid, generate_uid()
    sr.Modality, sr.SeriesNumber, sr.InstanceNumber = "SR", 2, 1
    identify(sr)
    sr.ValueType, sr.ContinuityOfContent = "CONTAINER", "SEPARATE"
    sr.CompletionFlag, sr.VerificationFlag = "COMPLETE", "UNVERIFIED"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = "11528-7", "LN", "Radiology Report"
    sr.ConceptNameCodeSequence = [title]
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", report
    finding = Dataset()
    finding.CodeValue, finding.CodingSchemeDesignator, finding.CodeMeaning = "121071", "DCM", "Finding"
    item.ConceptNameCodeSequence = [finding]
    sr.ContentSequence = [item]
    sr_path = folder / "report.dcm"
    sr.save_as(sr_path, enforce_file_format=True)
    uids = [study_uid, image.SeriesInstanceUID, image.SOPInstanceUID, sr.SeriesInstanceUID, sr.SOPInstanceUID]
    return study_uid, uids, [image_path, sr_path]
