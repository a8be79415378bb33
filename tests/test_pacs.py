"""medgen_monai.io.pacs against a real Orthanc (tests/orthanc.py), through DIMSE (dicom://) and DICOMweb (http://)."""

from __future__ import annotations

import shutil
import socket
import time

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medgen_monai.errors import DicomError, PacsError
from medgen_monai.io.pacs import DicomWebClient, DimseClient, PacsClient

PROTOCOLS = ["dicom", "http"]


def _client(orthanc, protocol: str) -> PacsClient:
    return PacsClient.from_url(orthanc.dicom_url if protocol == "dicom" else orthanc.http_url)


@pytest.fixture
def pacs(orthanc, request):
    """An empty Orthanc for each test (one server per module)."""
    orthanc.clear()
    yield orthanc
    orthanc.clear()


@pytest.fixture
def inputs(tmp_path):
    """Copies of pydicom's CT_small.dcm and MR_small.dcm (two studies, one instance each)."""
    folder = tmp_path / "in"
    folder.mkdir()
    return [shutil.copy(get_testdata_file(name), folder / name) for name in ("CT_small.dcm", "MR_small.dcm")]


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_from_url_forms():
    assert isinstance(PacsClient.from_url("dicom://ORTHANC@127.0.0.1:4242"), DimseClient)
    web = PacsClient.from_url("http://127.0.0.1:8042/dicom-web/")
    assert isinstance(web, DicomWebClient) and web.address == "http://127.0.0.1:8042/dicom-web"
    for bad in (
        "ftp://host/x",
        "dicom://127.0.0.1:4242",
        "dicom://A@host:99999",
        "dicom://WAY_TOO_LONG_AE_TITLE@h:1",
        "pacs",
    ):
        with pytest.raises(ValueError, match=r"dicom://AET@host:port .* http\(s\)://host:port"):
            PacsClient.from_url(bad)
    with pytest.raises(ValueError, match="calling_aet"):
        PacsClient.from_url("dicom://ORTHANC@127.0.0.1:4242", calling_aet="")


@pytest.mark.parametrize("scheme", ["dicom://ORTHANC@127.0.0.1:{port}", "http://127.0.0.1:{port}/dicom-web"])
def test_unreachable_fails_fast_naming_the_address(scheme, tmp_path):
    port = _closed_port()
    client = PacsClient.from_url(scheme.format(port=port), timeout=3.0)
    for call in (client.echo, client.find_studies, lambda: client.retrieve_study("1.2.3", tmp_path / "got")):
        start = time.monotonic()
        with pytest.raises(PacsError, match=f"127.0.0.1:{port}"):
            call()
        assert time.monotonic() - start < 10.0
    assert not (tmp_path / "got").exists()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_echo(pacs, protocol):
    _client(pacs, protocol).echo()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_store_find_retrieve(pacs, protocol, inputs, tmp_path):
    client = _client(pacs, protocol)
    assert client.store(inputs) == 2
    assert len(pacs.instances()) == 2
    originals = {str(pydicom.dcmread(p).StudyInstanceUID): pydicom.dcmread(p) for p in inputs}

    studies = client.find_studies()
    assert sorted(s["StudyInstanceUID"] for s in studies) == sorted(originals)
    ct = client.find_studies(PatientID="1CT1")
    assert [s["StudyInstanceUID"] for s in ct] == [
        str(originals_ct.StudyInstanceUID) for originals_ct in originals.values() if originals_ct.PatientID == "1CT1"
    ]
    assert ct[0]["PatientName"] == "CompressedSamples^CT1" and ct[0]["NumberOfStudyRelatedInstances"] == 1
    assert client.find_studies(PatientID="nobody") == []

    for study_uid, original in originals.items():
        instances = client.find_instances(study_uid)
        assert [(i["SOPInstanceUID"], i["SOPClassUID"]) for i in instances] == [
            (str(original.SOPInstanceUID), str(original.SOPClassUID))
        ]
        files = client.retrieve_study(study_uid, tmp_path / protocol / study_uid)
        assert files == [tmp_path / protocol / study_uid / f"{original.SOPInstanceUID}.dcm"]
        assert sorted(p.name for p in files[0].parent.iterdir()) == [files[0].name]  # no temporary file left
        got = pydicom.dcmread(files[0])
        assert got.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert got.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        for ds in (got, original):  # Data Set Trailing Padding: pynetdicom's encoder drops it (it carries no data)
            if 0xFFFCFFFC in ds:
                del ds[0xFFFCFFFC]
        assert got == original  # every other element, as stored
        np.testing.assert_array_equal(got.pixel_array, original.pixel_array)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_store_a_folder(pacs, protocol, inputs):
    assert _client(pacs, protocol).store(inputs[0].parent) == 2
    assert len(pacs.instances()) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retrieve_unknown_study(pacs, protocol, tmp_path):
    with pytest.raises(PacsError, match="no instance of study 1.2.3.4"):
        _client(pacs, protocol).retrieve_study("1.2.3.4", tmp_path / "got")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_store_not_dicom_sends_nothing(pacs, protocol, inputs, tmp_path):
    no_meta = shutil.copy(get_testdata_file("no_meta.dcm"), tmp_path / "no_meta.dcm")
    text = tmp_path / "notes.dcm"
    text.write_text("not a DICOM file")
    client = _client(pacs, protocol)
    for bad in (text, no_meta):
        with pytest.raises(DicomError, match=str(bad)):
            client.store([inputs[0], bad])  # the good file first: every file is checked before anything is sent
    assert pacs.instances() == []
    with pytest.raises(ValueError, match="no such file"):
        client.store([tmp_path / "missing.dcm"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_store_refused_by_the_pacs(pacs, protocol, tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.StudyInstanceUID  # Orthanc cannot index an instance without its study
    path = tmp_path / "no_study_uid.dcm"
    ds.save_as(path)
    with pytest.raises(PacsError, match="0xA700" if protocol == "dicom" else "HTTP 400") as error:
        _client(pacs, protocol).store(path)
    assert str(path) in str(error.value) and "127.0.0.1" in str(error.value)
    assert pacs.instances() == []


def test_find_rejects_unknown_keywords(pacs):
    with pytest.raises(ValueError, match="PatientNam"):
        _client(pacs, "dicom").find_studies(PatientNam="x")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cli_echo_and_store_a_generate_output_folder(pacs, protocol, tmp_path):
    """`medgen-monai pacs-store` pushes every .dcm of an output folder (an SC per image, a volume's series folder),
    leaving the PNGs and sidecars beside them alone; `pacs-echo` says the PACS answers."""
    import json

    from medgen_monai.cli import pacs_echo, pacs_store
    from medgen_monai.io import OutputWriter

    url = pacs.dicom_url if protocol == "dicom" else pacs.http_url
    assert pacs_echo(url).endswith("answers")
    bundle = {"name": "test_bundle", "version": "0.0.1"}
    OutputWriter(tmp_path / "out", "png,dicom", bundle=bundle).write(
        np.random.default_rng(0).random((2, 3, 8, 8)), [{"id": "a", "seed": 0}, {"id": "b", "seed": 1}]
    )
    OutputWriter(tmp_path / "out" / "mr", "nifti,dicom", bundle=bundle).write(
        np.random.default_rng(1).random((1, 1, 6, 5, 4)), [{"id": "v", "seed": 2}]
    )
    summary = json.loads(pacs_store(url, str(tmp_path / "out")))
    assert summary["instances_stored"] == 2 + 4
    assert len(pacs.instances()) == 6
    with pytest.raises(ValueError, match="no .dcm file"):
        pacs_store(url, str(_empty(tmp_path)))


def _empty(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir(exist_ok=True)
    (folder / "x.png").write_bytes(b"not dicom")
    return folder
