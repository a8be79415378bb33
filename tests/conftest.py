from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# inference caches go to the user cache (bundle folders are never written): a fresh one per test process
os.environ.setdefault("MEDGEN_MONAI_CACHE", __import__("tempfile").mkdtemp(prefix="medgen-monai-cache-"))


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc (tests/orthanc.py) on free 127.0.0.1 ports, shared by the tests of one module; fails (does not
    skip) when Orthanc is not installed, naming the command that installs it."""
    from orthanc import INSTALL_HINT, ORTHANC, start_orthanc

    if not ORTHANC.exists():
        pytest.fail(f"{ORTHANC} missing: {INSTALL_HINT}", pytrace=False)
    with start_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server
