"""medgen-monai pacs-run against a real Orthanc: store an identifiable input study (an RGB image and a Basic Text SR),
pull it, generate with a shipped bundle, push the synthetic DICOM back, and check what arrived."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pacs_helpers import IDENTIFYING, identifiable_study
from PIL import Image

from medgen_monai import cli

BUNDLES = Path(__file__).resolve().parents[1] / "bundles"

CLINICAL = "a dark brown asymmetric lesion with irregular borders and a blue-white veil"
#: the report names the patient, a physician, dates, a record number, a phone, an e-mail, an address and an age over 89
REPORT = (
    f"Jane Doe, a 93-year-old woman (MRN-4711-0815), seen on March 5, 2023: {CLINICAL}. Discussed with "
    "Dr. Gregory House on 05/03/2023 at 14:05, phone (617) 555-0123, greg.house@example.org; she lives at "
    "221 Baker Street. Electronically signed by: Lisa Cuddy"
)
#: every identifying string of the report
REPORT_IDENTIFIERS = (
    "Jane",
    "Doe",
    "93-year",
    "MRN-4711-0815",
    "March 5, 2023",
    "Gregory",
    "House",
    "05/03/2023",
    "14:05",
    "555-0123",
    "greg.house",
    "221 Baker",
    "Cuddy",
    "Lisa",
)


@pytest.fixture
def stored_study(orthanc, tmp_path):
    """Orthanc holding only the identifiable input study; (study UID, its UIDs)."""
    from medgen_monai.io.pacs import PacsClient

    orthanc.clear()
    study_uid, uids, files = identifiable_study(tmp_path / "input", REPORT)
    assert PacsClient.from_url(orthanc.dicom_url).store(files) == 2
    yield study_uid, uids
    orthanc.clear()


def _check_pushed(orthanc, summary: dict, out: Path, input_uids: list[str], bundle: str) -> list[dict]:
    """Every output arrived once, marked synthetic, with the PNG's pixels and nothing identifying; the sidecars."""
    sidecars = [json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.name != "dicom_study.json"]
    sidecars = [s for s in sidecars if "files" in s]
    assert sidecars and all(set(s["files"]) >= {"png", "dicom"} for s in sidecars)
    assert isinstance(summary["synthetic_study"], str) and summary["synthetic_study"] not in input_uids
    arrived = orthanc.study_instances(summary["synthetic_study"])
    assert len(arrived) == summary["instances_pushed"] == len(sidecars)
    assert len(orthanc.instances()) == 2 + len(sidecars)  # the input study is untouched
    by_uid = {}
    for instance in arrived:
        data = orthanc.instance_file(instance)
        for value in [*IDENTIFYING.values(), *input_uids, "Dermatoscope Inc"]:
            assert value.encode() not in data, f"{value!r} of the input reached the PACS"
        ds = pydicom.dcmread(io.BytesIO(data))
        by_uid[str(ds.SOPInstanceUID)] = ds
    for sidecar in sidecars:
        local = pydicom.dcmread(out / sidecar["files"]["dicom"])
        ds = by_uid[str(local.SOPInstanceUID)]
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.ConversionType == "SYN"
        assert ds.SeriesDescription.startswith("SYNTHETIC")
        assert ds.BurnedInAnnotation == "NO"
        assert bundle in ds.DerivationDescription and f"seed {sidecar['seed']}" in ds.DerivationDescription
        assert ds.PatientName != IDENTIFYING["PatientName"] and ds.PatientID.startswith("SYN")
        # the de-identified reference: allow-listed attributes of the input pass, nothing else
        assert (ds.PatientSex, ds.PatientAge) == ("F", "046Y")
        png = np.asarray(Image.open(out / sidecar["files"]["png"]))
        np.testing.assert_array_equal(ds.pixel_array, png)
    return sidecars


def test_pacs_run_label_bundle_over_dimse(orthanc, stored_study, tmp_path):
    study_uid, uids = stored_study
    out = tmp_path / "out"
    summary = json.loads(
        cli.pacs_run(
            str(BUNDLES / "ldm_label_derm"),
            orthanc.dicom_url,
            study_uid,
            str(out),
            n=2,
            category="MEL",
            seed=3,
            steps=2,
            progress=False,
        )
    )
    assert summary["study_pulled"] == study_uid and summary["instances_pulled"] == 2
    assert summary["output_dir"] == str(out) and not summary["report_used_as_description"]
    sidecars = _check_pushed(orthanc, summary, out, uids, "ldm_label_derm")
    assert sorted(s["seed"] for s in sidecars) == [3, 4] and {s["category"] for s in sidecars} == {"MEL"}
    assert not list(tmp_path.glob(".out.*"))  # the staging folder became out


def test_pacs_run_description_from_the_report_over_dicomweb(orthanc, stored_study, tmp_path, capsys, caplog):
    study_uid, uids = stored_study
    out = tmp_path / "out"
    caplog.set_level("DEBUG")
    summary = json.loads(
        cli.pacs_run(
            str(BUNDLES / "vap_diffusion_derm"), orthanc.http_url, study_uid, str(out), n=1, steps=2, progress=False
        )
    )
    assert summary["report_used_as_description"]
    sidecars = _check_pushed(orthanc, summary, out, uids, "vap_diffusion_derm")
    (description,) = {s["description"] for s in sidecars}
    assert CLINICAL in description and "[NAME]" in description and "[DATE]" in description  # the finding is kept
    # no identifying string of the report reaches any output file, the console or the log
    captured = capsys.readouterr()
    logs = "\n".join(record.getMessage() for record in caplog.records)
    outputs = [p.read_bytes() for p in out.rglob("*") if p.is_file()]
    for value in REPORT_IDENTIFIERS:
        assert value not in captured.out and value not in captured.err and value not in logs, value
        assert not any(value.encode() in data for data in outputs), f"{value!r} reached an output file"


def test_failed_generation_pushes_nothing(orthanc, stored_study, tmp_path, capsys):
    study_uid, _ = stored_study
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(
            [
                "pacs-run",
                "--bundle",
                str(BUNDLES / "ldm_label_derm"),
                "--pacs",
                orthanc.dicom_url,
                "--study",
                study_uid,
                "--out",
                str(out),
                "--category",
                "NOT_A_CLASS",
                "--steps",
                "2",
                "--progress",
                "False",
            ]
        )
    assert exit_info.value.code == 2
    assert "unknown category" in capsys.readouterr().err
    assert len(orthanc.instances()) == 2  # only the input
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input"]  # no out, no staging folder


def test_unreachable_pacs_one_line(tmp_path, capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for url in (f"dicom://ORTHANC@127.0.0.1:{port}", f"http://127.0.0.1:{port}/dicom-web"):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(
                [
                    "pacs-run",
                    "--bundle",
                    str(BUNDLES / "ldm_label_derm"),
                    "--pacs",
                    url,
                    "--study",
                    "1.2.3",
                    "--out",
                    str(tmp_path / "out"),
                ]
            )
        assert exit_info.value.code == 2
        # the last line: (a bundle run earlier in this process may have left logging handlers writing above it)
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("medgen-monai: error: ") and f"127.0.0.1:{port}" in last
    with pytest.raises(ValueError, match="dicom://AET@host:port"):
        cli.pacs_run(str(BUNDLES / "ldm_label_derm"), "orthanc:4242", "1.2.3", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
