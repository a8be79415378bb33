"""A real Orthanc PACS for the tests: the Debian packages ``orthanc`` and ``orthanc-dicomweb`` (``make test``
installs them), started on free 127.0.0.1 ports with its storage in a temporary folder and torn down afterwards.

The ``orthanc`` fixture in conftest.py starts one :class:`OrthancServer` per test module.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ORTHANC",
    "DICOMWEB_PLUGIN",
    "INSTALL_HINT",
    "USER_CONFIG",
    "OrthancServer",
    "orthanc_config",
    "start_orthanc",
]

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
INSTALL_HINT = (
    "make system-deps  (or: sudo apt-get install -y orthanc orthanc-dicomweb dicom3tools); "
    "`make test` installs them when missing"
)


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the OS picks it, so a system Orthanc on 4242/8042 is
    never chosen)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: the configuration docs/dicom.md tells users to run (loopback only, any calling AE may echo, store, find, get)
USER_CONFIG = Path(__file__).parents[1] / "docs" / "orthanc.json"


def orthanc_config(folder: Path, dicom_port: int, http_port: int) -> dict[str, Any]:
    """docs/orthanc.json (the Orthanc 1.10 configuration the docs give users; option names as ``Orthanc --config=FILE``
    documents them) with this server's ports and a private storage folder, so the tests run what users run.

    Args:
        folder: the server's private folder (storage and index go under it).
        dicom_port: DICOM (DIMSE) port.
        http_port: REST and DICOMweb port.
    """
    config = json.loads(USER_CONFIG.read_text())
    config.update(
        {
            "Name": "medgen-monai-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": http_port,
            "DicomPort": dicom_port,
        }
    )
    if config["Plugins"] != [str(DICOMWEB_PLUGIN)]:
        raise AssertionError(f"{USER_CONFIG}: Plugins should be [{DICOMWEB_PLUGIN}] (the Debian package's path)")
    return config


@dataclass
class OrthancServer:
    """A running Orthanc: its ports, the URLs :class:`medgen_monai.io.pacs.PacsClient` takes, and a small REST client.

    Attributes:
        dicom_port: DIMSE port on 127.0.0.1.
        http_port: REST / DICOMweb port on 127.0.0.1.
        folder: the server's temporary folder (config, storage, log).
        process: the Orthanc process.
    """

    dicom_port: int
    http_port: int
    folder: Path
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def dicom_url(self) -> str:
        return f"dicom://ORTHANC@127.0.0.1:{self.dicom_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "orthanc.log"

    def log(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of Orthanc's log."""
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return "(no log)"

    # ---- REST -----------------------------------------------------------------------------------
    def request(self, path: str, method: str = "GET", data: bytes | None = None, timeout: float = 30.0) -> bytes:
        """One REST call; the body of the answer."""
        req = urllib.request.Request(self.rest_url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.read()

    def get_json(self, path: str) -> Any:
        return json.loads(self.request(path))

    def instances(self) -> list[str]:
        """Orthanc ids of every stored instance."""
        return list(self.get_json("/instances"))

    def study_instances(self, study_uid: str) -> list[str]:
        """Orthanc ids of the instances of the study with this StudyInstanceUID (none when it is not stored)."""
        found = json.loads(self.request("/tools/lookup", method="POST", data=study_uid.encode()))
        studies = [item["ID"] for item in found if item.get("Type") == "Study"]
        return [item["ID"] for s in studies for item in self.get_json(f"/studies/{s}/instances")]

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance, as received."""
        return self.request(f"/instances/{instance_id}/file")

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """``{keyword: value}`` of an instance (Orthanc's simplified tags; sequences are lists of dicts)."""
        return dict(self.get_json(f"/instances/{instance_id}/simplified-tags"))

    def clear(self) -> None:
        """Delete every stored patient (tests of one module share the server)."""
        for patient in self.get_json("/patients"):
            self.request(f"/patients/{patient}", method="DELETE")

    # ---- life cycle -----------------------------------------------------------------------------
    def stop(self) -> None:
        """Terminate Orthanc (kill it when it does not stop within 10 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class _Exited(RuntimeError):
    """Orthanc stopped before answering (a port taken meanwhile, a bad config)."""


def _start_once(folder: Path, timeout: float) -> OrthancServer:
    server = OrthancServer(dicom_port=_free_port(), http_port=_free_port(), folder=folder)
    while server.http_port == server.dicom_port:
        server.http_port = _free_port()
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, server.dicom_port, server.http_port), indent=2))
    log = server.log_path.open("wb")
    try:
        server.process = subprocess.Popen(
            [str(ORTHANC), str(config)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=folder
        )
    finally:
        log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise _Exited(
                f"Orthanc exited with status {server.process.returncode} before answering "
                f"(config {config}); its log:\n{_logs(folder)}"
            )
        try:
            system = json.loads(server.request("/system", timeout=2.0))
            if system.get("DicomAet") == "ORTHANC" and _listening(server.dicom_port):
                return server
        except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(
        f"Orthanc did not answer on {server.rest_url}/system within {timeout:.0f} s; its log:\n{_logs(folder)}"
    )


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _logs(folder: Path, tail: int = 4000) -> str:
    """The tail of Orthanc's log (its stdout and stderr)."""
    parts = []
    for path in sorted(folder.glob("*.log*")):
        try:
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        except OSError:
            continue
    return "\n".join(parts) or "(no log)"


@contextlib.contextmanager
def start_orthanc(folder: str | Path, timeout: float = 60.0) -> Iterator[OrthancServer]:
    """Start Orthanc in ``folder`` on free ports, yield it once ``/system`` answers, stop it afterwards.

    Raises:
        FileNotFoundError: Orthanc or its DICOMweb plugin is not installed (the message says how to install them).
        RuntimeError: it did not start; the message carries its log.
    """
    missing = [str(p) for p in (ORTHANC, DICOMWEB_PLUGIN) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            f"{', '.join(missing)} missing: install the Debian packages orthanc and orthanc-dicomweb: {INSTALL_HINT}"
        )
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    server = None
    for attempt in range(3):
        # a free port can be taken between the check and Orthanc's bind: then Orthanc exits, and another pair is tried
        try:
            server = _start_once(folder, timeout)
            break
        except _Exited:
            if attempt == 2:
                raise
    assert server is not None
    try:
        yield server
    finally:
        server.stop()
