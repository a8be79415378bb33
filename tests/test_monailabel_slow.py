"""The bundles through MONAI Label's own classes (slow: make test-slow; docs/monai.md, "MONAI Label").

monailabel is an optional install beside the project: these tests find it on the path or in the folder
``$MEDGEN_MONAILABEL_PATH`` names (a ``pip install --no-deps --target`` install), and skip, saying why, when it is
in neither. With the variable set, a monailabel that does not import fails the tests instead.

* ``infer_tasks`` builds MONAI Label infer tasks (``monailabel.interfaces.tasks.infer_v2.InferTask``) and one infer
  request, passed as ``MONAILabelApp.infer`` passes it, generates with ``ldm_label_derm``;
* MONAI Label's own bundle task (``BundleInferTask``) finds no model in a generator bundle: why the tasks are ours;
* the app (``apps/monailabel/main.py``), loaded as ``monailabel start_server`` loads it, answers an infer request.

The last two need the parts of monailabel that cannot import beside the project's torch and pydicom (docs/monai.md
says why): they skip with the import error where that is so.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from medgen_monai.integrations.monailabel import MONAILABEL_PATH_ENV, import_monailabel, infer_tasks

ROOT = Path(__file__).parents[1]
BUNDLES = ROOT / "bundles"
REQUEST = {"category": "MEL", "n": 1, "seed": 0, "num_inference_steps": 2}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def infer_task_class():
    """MONAI Label's ``InferTask``: skip when monailabel is nowhere, fail when ``$MEDGEN_MONAILABEL_PATH`` names an
    install that does not import."""
    try:
        return import_monailabel()[0]
    except ImportError as e:
        if os.environ.get(MONAILABEL_PATH_ENV):
            pytest.fail(str(e), pytrace=False)
        pytest.skip(str(e))


def _import_or_skip(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    # an ImportError, or torchvision's RuntimeError for a CUDA build beside the project's CPU torch
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"{what} ({module}) cannot be imported beside the project: {type(e).__name__}: {e}")


def _check_result(file: str | None, result: dict, out: Path) -> None:
    assert file is not None and Path(file).suffix == ".png"
    generated = Path(result["file"])
    assert generated.is_relative_to(out / "ldm_label_derm") and generated.name == "MEL_000000.png"
    assert Path(file).read_bytes() == generated.read_bytes()
    image = Image.open(file)
    assert image.size == (64, 64) and image.mode == "RGB"
    sidecar = json.loads(generated.with_suffix(".json").read_text())
    assert result["sidecar"] == sidecar
    assert (sidecar["id"], sidecar["category"], sidecar["seed"], sidecar["steps"]) == ("MEL_000000", "MEL", 0, 2)
    assert sidecar["bundle"]["name"] == "ldm_label_derm" and sidecar["files"] == {"png": "MEL_000000.png"}
    json.dumps(result)


def test_monai_label_infer_tasks_generate_with_the_shipped_bundles(infer_task_class, tmp_path):
    from monailabel.interfaces.tasks.infer_v2 import InferType

    out = tmp_path / "generated"
    tasks = infer_tasks(BUNDLES, out)
    assert sorted(tasks) == ["ldm_label_derm", "vap_diffusion_colon", "vap_diffusion_cxr", "vap_diffusion_derm"]
    for name, task in tasks.items():
        assert isinstance(task, infer_task_class) and task.is_valid(), name
        info = task.info()  # what MONAILabelApp.info() sends its clients for each model
        assert {"type", "labels", "dimension", "description", "config"} <= set(info)
        assert info["type"] == InferType.OTHERS and info["labels"] == [] and info["dimension"] == 2
        assert info["bundle"] == name and "n" in info["config"] and "category" in info["config"]
    assert "prompt" in tasks["vap_diffusion_derm"].info()["config"]

    task = tasks["ldm_label_derm"]
    # as MONAILabelApp.infer hands a request to its task: the client's fields, the image id resolved by the
    # datastore ("" for none), the task's description written over the request's, save_label off
    request = {
        "model": "ldm_label_derm",
        "image": "",
        "device": "cuda",
        "save_label": False,
        **REQUEST,
        "description": task.description,
    }
    file, result = task(request)
    try:
        _check_result(file, result, out)
    finally:
        Path(file).unlink()


def test_monai_labels_bundle_task_finds_no_model_in_a_generator_bundle(infer_task_class):
    _import_or_skip("monailabel.tasks.infer.bundle", "MONAI Label's BundleInferTask")
    from monailabel.tasks.infer.bundle import BundleInferTask

    task = BundleInferTask(str(BUNDLES / "ldm_label_derm"), conf={})
    assert not task.is_valid()  # no models/model.pt or model.ts: MONAI Label ignores the bundle


def test_the_monai_label_app_answers_an_infer_request(infer_task_class, tmp_path):
    _import_or_skip("monailabel.interfaces.app", "MONAI Label's MONAILabelApp")
    from monailabel.interfaces.utils.app import app_instance

    studies = tmp_path / "studies"
    studies.mkdir()
    out = tmp_path / "generated"
    app = app_instance(str(ROOT / "apps" / "monailabel"), str(studies), {"output_dir": str(out)})
    assert sorted(app.info()["models"]) == [
        "ldm_label_derm",
        "vap_diffusion_colon",
        "vap_diffusion_cxr",
        "vap_diffusion_derm",
    ]
    answer = app.infer({"model": "ldm_label_derm", **REQUEST})
    try:
        _check_result(answer["file"], answer["params"], out)
        assert answer["label"] == answer["file"]  # not saved into the datastore
    finally:
        Path(answer["file"]).unlink()
