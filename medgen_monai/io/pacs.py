"""A PACS client over DIMSE (pynetdicom) or DICOMweb (dicomweb-client), chosen by the URL:

- ``dicom://AET@host:port``: C-ECHO, C-STORE, C-FIND (study root) and C-GET (study root) as calling AE ``MEDGEN``;
- ``http(s)://host:port/<dicomweb root>`` (e.g. Orthanc's ``http://127.0.0.1:8042/dicom-web``): QIDO-RS, STOW-RS
  and WADO-RS.

Both speak the same five methods (:class:`PacsClient`). Every failure to reach or use the PACS raises
:class:`medgen_monai.errors.PacsError` naming the address; an unreachable PACS fails within ``timeout`` seconds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

from ..errors import DicomError, PacsError
from .atomic import atomic_path

__all__ = ["PacsClient", "DimseClient", "DicomWebClient", "STUDY_KEYS", "INSTANCE_KEYS", "dicom_files"]

#: return keys of :meth:`PacsClient.find_studies` (besides the query's own keys).
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "AccessionNumber",
    "PatientID",
    "PatientName",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedInstances",
)
#: return keys of :meth:`PacsClient.find_instances`.
INSTANCE_KEYS = (
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "InstanceNumber",
    "Modality",
    "SeriesDescription",
)

_URL_FORMS = "dicom://AET@host:port (DIMSE) or http(s)://host:port/<dicomweb root> (DICOMweb)"
_DICOM_URL = re.compile(r"^dicom://(?P<aet>[^@/:]{1,16})@(?P<host>[^:/@]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})/?$")
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")  # DICOM AE: up to 16 printable characters, no backslash


def dicom_files(paths: str | PathLike | Iterable[str | PathLike]) -> list[Path]:
    """The files to store: each file as given, each folder's regular files (recursively, sorted; hidden and temporary
    ``.*`` files skipped).

    Raises:
        ValueError: a path that does not exist, or nothing to store.
    """
    items = [paths] if isinstance(paths, (str, PathLike)) else list(paths)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        elif path.is_file():
            files.append(path)
        else:
            raise ValueError(f"{path}: no such file or folder to store")
    if not files:
        raise ValueError(f"nothing to store in {[str(p) for p in items]}")
    return files


def _read(path: Path, *, pixels: bool = True):
    """One DICOM file with its file meta, or one DicomError naming the file."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as e:
        raise DicomError(path, "file", f"a DICOM Part 10 file with file meta ({type(e).__name__}: {e})") from None
    meta = getattr(ds, "file_meta", None)
    for keyword in ("MediaStorageSOPClassUID", "TransferSyntaxUID"):
        if meta is None or keyword not in meta:
            raise DicomError(path, "file meta", f"{keyword} (a DICOM Part 10 file with file meta)")
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if keyword not in ds:
            raise DicomError(path, keyword, "a UID (every stored instance needs it)")
    return ds


def _value(element: Any) -> Any:
    """A pydicom element's value as plain Python: str, int, float, a list of those, or a list of dicts (sequences)."""
    from pydicom.multival import MultiValue
    from pydicom.sequence import Sequence as DicomSequence

    value = element.value
    if isinstance(value, DicomSequence):
        return [_as_dict(item) for item in value]
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(v) for v in value]
    return _plain(value)


def _plain(value: Any) -> Any:
    from pydicom.valuerep import PersonName

    if value is None:
        return ""
    if isinstance(value, PersonName):
        return str(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return str(value)


def _as_dict(ds: Any) -> dict[str, Any]:
    """``{keyword: value}`` of a dataset's elements (private and unknown tags dropped)."""
    return {element.keyword: _value(element) for element in ds if element.keyword and element.keyword != "PixelData"}


def _check_query(query: Mapping[str, Any]) -> None:
    from pydicom.datadict import tag_for_keyword

    for keyword in query:
        if tag_for_keyword(keyword) is None:
            raise ValueError(f"query key {keyword!r}: not a DICOM keyword (e.g. PatientID, StudyDate, AccessionNumber)")


class PacsClient:
    """A PACS reached by DIMSE or DICOMweb; make one with :meth:`from_url`.

    Attributes:
        url: the URL given.
        address: where the PACS is (``AET@host:port`` or the DICOMweb URL), as error messages name it.
        timeout: seconds to connect (an unreachable PACS fails after at most this).
        response_timeout: seconds to wait for one answer once connected.
    """

    url: str
    address: str

    def __init__(self, url: str, timeout: float = 5.0, response_timeout: float = 60.0) -> None:
        if not timeout > 0 or not response_timeout > 0:
            raise ValueError(f"timeout and response_timeout must be > 0 seconds, got {timeout}, {response_timeout}")
        self.url = url
        self.timeout = float(timeout)
        self.response_timeout = float(response_timeout)

    @classmethod
    def from_url(
        cls, url: str, calling_aet: str = "MEDGEN", timeout: float = 5.0, response_timeout: float = 60.0
    ) -> PacsClient:
        """A :class:`DimseClient` for ``dicom://AET@host:port``, a :class:`DicomWebClient` for ``http(s)://...``.

        Args:
            url: the PACS: ``dicom://AET@host:port`` or ``http(s)://host:port/<dicomweb root>``.
            calling_aet: our AE title (DIMSE only); the PACS must accept it (Orthanc: ``DicomAlwaysAllow*`` or a
                ``DicomModalities`` entry).
            timeout: seconds to connect before giving up with :class:`PacsError`.
            response_timeout: seconds to wait for each answer.

        Raises:
            ValueError: ``url`` is neither form.
        """
        if not isinstance(url, str):
            raise ValueError(f"--pacs: expected {_URL_FORMS}, got {url!r}")
        if url.startswith("dicom://"):
            return DimseClient(url, calling_aet=calling_aet, timeout=timeout, response_timeout=response_timeout)
        if re.match(r"^https?://[^/\s]+", url):
            return DicomWebClient(url, timeout=timeout, response_timeout=response_timeout)
        raise ValueError(f"--pacs {url!r}: expected {_URL_FORMS}")

    # ---- the interface ------------------------------------------------------------------------
    def echo(self) -> None:
        """Check the PACS answers (C-ECHO; DICOMweb: a one-result QIDO-RS query). Raises PacsError otherwise."""
        raise NotImplementedError

    def store(self, paths: str | PathLike | Iterable[str | PathLike]) -> int:
        """Send DICOM files (and every file in the folders given) to the PACS; the number of instances stored.

        Every file is read first: a file that is not DICOM raises :class:`DicomError` before anything is sent.

        Raises:
            DicomError: a file is not a DICOM Part 10 file with file meta, SOPClassUID and SOPInstanceUID.
            PacsError: the PACS cannot be reached or refused an instance (the message has the status and the file).
        """
        raise NotImplementedError

    def find_studies(self, **query: Any) -> list[dict[str, Any]]:
        """Studies matching ``query`` (DICOM keyword=value, wildcards ``*``/``?`` and ranges as the PACS allows).

        Returns:
            one ``{keyword: value}`` per study with at least :data:`STUDY_KEYS` the PACS returned.
        """
        raise NotImplementedError

    def find_instances(self, study_uid: str) -> list[dict[str, Any]]:
        """The instances of one study: ``{keyword: value}`` with :data:`INSTANCE_KEYS` the PACS returned."""
        raise NotImplementedError

    def retrieve_study(self, study_uid: str, folder: str | PathLike) -> list[Path]:
        """Retrieve every instance of a study into ``folder`` as ``<SOPInstanceUID>.dcm`` (Part 10 files with file meta,
        each written to a temporary name and renamed); the paths, sorted.

        Raises:
            PacsError: unreachable, the retrieve failed, or the PACS has no instance of this study.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.address!r})"


def _storage_name(sop_instance_uid: str) -> str:
    name = re.sub(r"[^0-9A-Za-z._-]", "_", str(sop_instance_uid)) or "instance"
    return f"{name}.dcm"


class DimseClient(PacsClient):
    """DIMSE through pynetdicom: C-ECHO, C-STORE, C-FIND and C-GET on the Study Root information model.

    Args:
        url: ``dicom://AET@host:port`` (AET: the PACS's called AE title).
        calling_aet: our AE title.
        timeout: seconds to connect and to negotiate the association.
        response_timeout: seconds to wait for each DIMSE message.
    """

    def __init__(
        self, url: str, calling_aet: str = "MEDGEN", timeout: float = 5.0, response_timeout: float = 60.0
    ) -> None:
        super().__init__(url, timeout, response_timeout)
        match = _DICOM_URL.match(url)
        if match is None or not 0 < int(match["port"]) < 65536 or not _AE_TITLE.match(match["aet"]):
            raise ValueError(f"--pacs {url!r}: expected {_URL_FORMS} (AET up to 16 characters, port 1..65535)")
        if not isinstance(calling_aet, str) or not _AE_TITLE.match(calling_aet):
            raise ValueError(f"calling_aet: expected an AE title of 1..16 printable characters, got {calling_aet!r}")
        self.called_aet = match["aet"]
        self.host = match["host"].strip("[]")
        self.port = int(match["port"])
        self.calling_aet = calling_aet
        self.address = f"{self.called_aet}@{match['host']}:{self.port}"

    def _ae(self):
        import logging

        from pynetdicom import AE

        # pynetdicom logs every DIMSE message at INFO, and a bundle's logging.conf puts the root logger at INFO: keep
        # its chatter to warnings (failures reach the user as PacsError anyway)
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        ae = AE(ae_title=self.calling_aet)
        ae.connection_timeout = self.timeout
        ae.acse_timeout = self.timeout
        ae.dimse_timeout = self.response_timeout
        ae.network_timeout = self.response_timeout
        return ae

    def _associate(self, ae, what: str, **kwargs: Any):
        assoc = ae.associate(self.host, self.port, ae_title=self.called_aet, **kwargs)
        if assoc.is_established:
            return assoc
        if assoc.is_rejected:
            reason = (
                "the association was rejected (check the called AE title and that the PACS accepts our AE "
                f"{self.calling_aet})"
            )
        else:
            reason = self._unreachable_reason() or (
                "the PACS aborted the association (it accepted none of the "
                "presentation contexts, or refused our AE "
                f"{self.calling_aet})"
            )
        raise PacsError(f"dicom://{self.address}: {what}: {reason}")

    def _unreachable_reason(self) -> str | None:
        """Why no association came up, when the cause is the network (pynetdicom reports every failure as an abort)."""
        import socket

        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout):
                return None
        except ConnectionRefusedError:
            return "connection refused (nothing listens on this port)"
        except TimeoutError:
            return f"no connection within {self.timeout:g} s"
        except OSError as e:
            return f"cannot connect ({e.strerror or e})"

    def echo(self) -> None:
        from pynetdicom.sop_class import Verification

        ae = self._ae()
        ae.add_requested_context(Verification)
        assoc = self._associate(ae, "C-ECHO")
        try:
            status = assoc.send_c_echo()
        finally:
            assoc.release()
        if not status or status.Status != 0x0000:
            raise PacsError(f"dicom://{self.address}: C-ECHO: {self._status_text(status)}")

    @staticmethod
    def _status_text(status: Any, table: Mapping[int, tuple[str, str]] | None = None) -> str:
        from pynetdicom.status import GENERAL_STATUS

        if not status:
            return "no response (timed out or the association was aborted)"
        code = int(status.Status)
        meaning = {**GENERAL_STATUS, **(table or {})}.get(code)
        text = f"status 0x{code:04X}" + (f" {meaning[0]}: {meaning[1]}" if meaning else "")
        return text + (f" ({status.ErrorComment})" if "ErrorComment" in status else "")

    def store(self, paths: str | PathLike | Iterable[str | PathLike]) -> int:
        from pynetdicom import build_context
        from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

        files = dicom_files(paths)
        datasets = [(path, _read(path)) for path in files]
        # one presentation context per (SOP class, transfer syntax) the files have, so nothing needs converting;
        # at most 128 contexts per association
        pairs = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, ds in datasets})
        chunks = [pairs[i : i + 128] for i in range(0, len(pairs), 128)]
        stored = 0
        for chunk in chunks:
            wanted = set(chunk)
            ae = self._ae()
            ae.requested_contexts = [build_context(sop, syntax) for sop, syntax in chunk]
            assoc = self._associate(ae, "C-STORE")
            try:
                for path, ds in datasets:
                    pair = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                    if pair not in wanted:
                        continue
                    accepted = [c for c in assoc.accepted_contexts if (c.abstract_syntax, c.transfer_syntax[0]) == pair]
                    if not accepted:
                        raise PacsError(
                            f"dicom://{self.address}: C-STORE of {path}: the PACS refused SOP class "
                            f"{pair[0]} in transfer syntax {pair[1]}"
                        )
                    status = assoc.send_c_store(ds)
                    # 0x0000 success; 0xB000/0xB006/0xB007 stored with a warning (coercion, elements discarded)
                    if not status or not (status.Status == 0x0000 or 0xB000 <= status.Status <= 0xBFFF):
                        raise PacsError(
                            f"dicom://{self.address}: C-STORE of {path} refused: "
                            f"{self._status_text(status, STORAGE_SERVICE_CLASS_STATUS)}"
                        )
                    stored += 1
            finally:
                if assoc.is_established:
                    assoc.release()
        return stored

    def _find(self, level: str, keys: Sequence[str], query: Mapping[str, Any]) -> list[dict[str, Any]]:
        from pydicom import Dataset
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FindModel

        _check_query(query)
        identifier = Dataset()
        identifier.QueryRetrieveLevel = level
        for keyword in keys:
            setattr(identifier, keyword, "")
        for keyword, value in query.items():
            setattr(identifier, keyword, "" if value is None else value)
        ae = self._ae()
        ae.add_requested_context(FindModel)
        assoc = self._associate(ae, f"C-FIND ({level})")
        results: list[dict[str, Any]] = []
        try:
            for status, answer in assoc.send_c_find(identifier, FindModel):
                if not status:
                    raise PacsError(f"dicom://{self.address}: C-FIND ({level}): {self._status_text(status)}")
                if status.Status in (0xFF00, 0xFF01):  # pending: one match
                    if answer is not None:
                        match = _as_dict(answer)
                        match.pop("QueryRetrieveLevel", None)
                        results.append(match)
                elif status.Status != 0x0000:
                    raise PacsError(f"dicom://{self.address}: C-FIND ({level}) refused: {self._status_text(status)}")
        finally:
            if assoc.is_established:
                assoc.release()
        return results

    def find_studies(self, **query: Any) -> list[dict[str, Any]]:
        return self._find("STUDY", STUDY_KEYS, query)

    def find_instances(self, study_uid: str) -> list[dict[str, Any]]:
        return self._find("IMAGE", INSTANCE_KEYS, {"StudyInstanceUID": str(study_uid)})

    def retrieve_study(self, study_uid: str, folder: str | PathLike) -> list[Path]:
        from pydicom import Dataset
        from pydicom.filewriter import write_file_meta_info
        from pydicom.uid import (
            JPEG2000,
            DeflatedExplicitVRLittleEndian,
            ExplicitVRBigEndian,
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            JPEG2000Lossless,
            JPEGBaseline8Bit,
            JPEGExtended12Bit,
            JPEGLosslessSV1,
            RLELossless,
        )
        from pynetdicom import build_role, evt
        from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

        folder = Path(folder)
        instances = self.find_instances(study_uid)
        sop_classes = sorted({str(i["SOPClassUID"]) for i in instances if i.get("SOPClassUID")})
        if not instances:
            raise PacsError(f"dicom://{self.address}: C-GET: no instance of study {study_uid} on this PACS")
        if not sop_classes:
            raise PacsError(
                f"dicom://{self.address}: C-FIND answered no SOPClassUID for study {study_uid}: "
                "cannot negotiate the C-GET storage contexts"
            )
        # one context per (SOP class, transfer syntax) so the PACS can send each instance as it stored it;
        # 127 contexts besides the GET model: fall back to uncompressed only for studies of many SOP classes
        syntaxes = [
            ExplicitVRLittleEndian,
            ImplicitVRLittleEndian,
            DeflatedExplicitVRLittleEndian,
            ExplicitVRBigEndian,
            JPEGBaseline8Bit,
            JPEGExtended12Bit,
            JPEGLosslessSV1,
            JPEG2000Lossless,
            JPEG2000,
            RLELossless,
        ]
        if len(sop_classes) * len(syntaxes) > 127:
            syntaxes = syntaxes[:2]
        if len(sop_classes) * len(syntaxes) > 127:
            raise PacsError(
                f"dicom://{self.address}: C-GET of study {study_uid}: {len(sop_classes)} SOP classes do not "
                "fit in one association"
            )
        folder.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        errors: list[str] = []

        def on_store(event: Any) -> int:
            try:
                uid = event.request.AffectedSOPInstanceUID
                path = folder / _storage_name(uid)
                with atomic_path(path) as tmp, tmp.open("wb") as f:
                    # the dataset as received, behind a preamble and the file meta of its presentation context
                    f.write(b"\x00" * 128 + b"DICM")
                    write_file_meta_info(f, event.file_meta, enforce_standard=True)
                    f.write(event.request.DataSet.getvalue())
                written.append(path)
                return 0x0000
            except Exception as e:  # noqa: BLE001 - reported back to the PACS as a failed sub-operation
                errors.append(f"{type(e).__name__}: {e}")
                return 0xA700  # out of resources

        ae = self._ae()
        ae.add_requested_context(GetModel)
        roles = []
        for sop in sop_classes:
            for syntax in syntaxes:
                ae.add_requested_context(sop, syntax)
            roles.append(build_role(sop, scp_role=True))
        identifier = Dataset()
        identifier.QueryRetrieveLevel = "STUDY"
        identifier.StudyInstanceUID = str(study_uid)
        assoc = self._associate(ae, "C-GET", ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
        final = None
        try:
            for status, _ in assoc.send_c_get(identifier, GetModel):
                if not status:
                    raise PacsError(f"dicom://{self.address}: C-GET of study {study_uid}: {self._status_text(status)}")
                final = status
        finally:
            if assoc.is_established:
                assoc.release()
        if errors:
            raise PacsError(
                f"dicom://{self.address}: C-GET of study {study_uid}: writing into {folder} failed: {errors[0]}"
            )
        if final is None or final.Status not in (0x0000, 0xB000):
            raise PacsError(
                f"dicom://{self.address}: C-GET of study {study_uid} failed: {self._status_text(final)}"
                + (
                    f", {final.NumberOfFailedSuboperations} failed sub-operations"
                    if final is not None and "NumberOfFailedSuboperations" in final
                    else ""
                )
            )
        if final.Status == 0xB000 or len(written) < len(instances):
            raise PacsError(
                f"dicom://{self.address}: C-GET of study {study_uid}: received {len(written)} of "
                f"{len(instances)} instances ({self._status_text(final)})"
            )
        return sorted(set(written))


def _http_failure(response: Any) -> str:
    """An HTTP error answer in one line: the code, and the STOW-RS failure reasons when the body carries them."""
    from pydicom import Dataset

    if response is None:
        return "no answer"
    text = f"HTTP {response.status_code} {response.reason}"
    try:
        answer = Dataset.from_json(response.text)
        failed = list(getattr(answer, "FailedSOPSequence", []))
    except Exception:  # noqa: BLE001 - not a DICOM JSON body: show its start
        body = " ".join(response.text.split())[:200]
        return f"{text}: {body}" if body else text
    reasons = [
        f"SOP instance {getattr(item, 'ReferencedSOPInstanceUID', '?')}: FailureReason "
        f"0x{int(getattr(item, 'FailureReason', 0)):04X}"
        for item in failed
    ]
    return f"{text}" + (f" ({'; '.join(reasons[:3])})" if reasons else "")


class DicomWebClient(PacsClient):
    """DICOMweb through dicomweb-client: QIDO-RS (find), STOW-RS (store), WADO-RS (retrieve).

    Args:
        url: the DICOMweb root, e.g. ``http://127.0.0.1:8042/dicom-web`` (Orthanc).
        timeout: seconds to connect.
        response_timeout: seconds to wait for an answer.
    """

    #: instances per STOW-RS request (one multipart message each).
    batch_size = 32

    def __init__(self, url: str, timeout: float = 5.0, response_timeout: float = 60.0) -> None:
        super().__init__(url, timeout, response_timeout)
        from dicomweb_client import DICOMwebClient

        self.address = url.rstrip("/")
        self._client = DICOMwebClient(self.address, timeout=(self.timeout, self.response_timeout))
        # no retry with back-off: a PACS that answers 503 should fail now, with its answer in the message
        self._client.set_http_retry_params(retry=False)

    def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        import requests

        try:
            return function(*args, **kwargs)
        except requests.HTTPError as e:
            raise PacsError(f"{self.address}: {what} refused: {_http_failure(e.response)}") from None
        except requests.Timeout:
            raise PacsError(
                f"{self.address}: {what}: no answer within {self.timeout:g} s (connect) / "
                f"{self.response_timeout:g} s (response)"
            ) from None
        except requests.ConnectionError as e:
            # urllib3 nests the reason ("HTTPConnection(...): Failed to establish a new connection: [Errno 111] ...")
            errno = re.search(r"\[Errno -?\d+\] [^)'\"]+", str(e))
            raise PacsError(f"{self.address}: {what}: cannot connect ({errno[0].strip() if errno else e})") from None
        except requests.RequestException as e:
            raise PacsError(f"{self.address}: {what}: {type(e).__name__}: {e}") from None

    def _search(self, what: str, function: Any, **kwargs: Any) -> list[dict[str, Any]]:
        from pydicom import Dataset

        answers = self._call(what, function, **kwargs)
        return [_as_dict(Dataset.from_json(a)) for a in answers]

    def echo(self) -> None:
        self._call("QIDO-RS echo (studies, limit 1)", self._client.search_for_studies, limit=1)

    def store(self, paths: str | PathLike | Iterable[str | PathLike]) -> int:
        files = dicom_files(paths)
        datasets = [(path, _read(path)) for path in files]
        stored = 0
        for start in range(0, len(datasets), self.batch_size):
            batch = datasets[start : start + self.batch_size]
            names = ", ".join(str(p) for p, _ in batch[:3]) + (" ..." if len(batch) > 3 else "")
            answer = self._call(f"STOW-RS of {names}", self._client.store_instances, [ds for _, ds in batch])
            failed = list(getattr(answer, "FailedSOPSequence", []))
            if failed:
                by_uid = {str(ds.SOPInstanceUID): p for p, ds in batch}
                item = failed[0]
                uid = str(getattr(item, "ReferencedSOPInstanceUID", "?"))
                reason = getattr(item, "FailureReason", None)
                raise PacsError(
                    f"{self.address}: STOW-RS of {by_uid.get(uid, uid)} refused: "
                    f"status {'?' if reason is None else f'0x{int(reason):04X}'} "
                    f"({len(failed)} of {len(batch)} instances failed)"
                )
            stored += len(batch)
        return stored

    def find_studies(self, **query: Any) -> list[dict[str, Any]]:
        _check_query(query)
        return self._search(
            "QIDO-RS studies",
            self._client.search_for_studies,
            fields=list(STUDY_KEYS),
            search_filters={k: v for k, v in query.items()},
            get_remaining=True,
        )

    def find_instances(self, study_uid: str) -> list[dict[str, Any]]:
        return self._search(
            f"QIDO-RS instances of study {study_uid}",
            self._client.search_for_instances,
            study_instance_uid=str(study_uid),
            fields=list(INSTANCE_KEYS),
            get_remaining=True,
        )

    def retrieve_study(self, study_uid: str, folder: str | PathLike) -> list[Path]:
        folder = Path(folder)
        if not self.find_instances(study_uid):  # (Orthanc answers 404 to WADO-RS of an unknown study; others: empty)
            raise PacsError(f"{self.address}: WADO-RS: no instance of study {study_uid} on this PACS")
        # transfer-syntax *: each instance as the PACS stored it, not transcoded
        datasets = self._call(
            f"WADO-RS of study {study_uid}",
            self._client.retrieve_study,
            str(study_uid),
            media_types=(("application/dicom", "*"),),
        )
        if not datasets:
            raise PacsError(f"{self.address}: WADO-RS: no instance of study {study_uid} on this PACS")
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for ds in datasets:
            path = folder / _storage_name(ds.SOPInstanceUID)
            with atomic_path(path) as tmp:
                ds.save_as(tmp, enforce_file_format=True)
            written.append(path)
        return sorted(set(written))
