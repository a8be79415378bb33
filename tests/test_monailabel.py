"""The MONAI Label integration without monailabel (docs/monai.md, "MONAI Label"): a request's fields map to the
bundle's inference config overrides, bad fields are refused by name, and :class:`GenerationTask` serves a request
through the bundle's own inference workflow, returning the generated file and its sidecar. The same task through
MONAI Label's own classes: tests/test_monailabel_slow.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from medgen_monai.integrations.monailabel import (
    COMMON_FIELDS,
    KIND_FIELDS,
    GenerationTask,
    bundle_kind,
    import_monailabel,
    infer_tasks,
    request_overrides,
)

ROOT = Path(__file__).parents[1]
BUNDLES = ROOT / "bundles"
DERM = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


@pytest.mark.parametrize(
    "name, kind",
    [
        ("ldm_label_derm", "class"),
        ("vap_diffusion_derm", "description"),
        ("vap_diffusion_colon", "description"),
        ("vap_diffusion_cxr", "description"),
        ("ccella_prostate_mri", "report"),
        ("medcodim_cxr", "streams"),
    ],
)
def test_every_bundle_has_a_request_kind(name, kind):
    assert bundle_kind(BUNDLES / name) == kind


def test_bundle_kind_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    with pytest.raises(ValueError, match="bundle_root"):
        bundle_kind(tmp_path)


def test_a_class_request_maps_to_overrides_and_ignores_monai_labels_own_keys():
    request = {
        "model": "ldm_label_derm",
        "image": "",
        "description": "the model's description (MONAI Label's)",
        "label_tag": "original",
        "save_label": False,
        "category": "MEL",
        "n": "2",
        "seed": 3,
        "num_inference_steps": 2,
        "guidance_scale": "1.5",
        "eta": 0,
        "device": "cpu",
    }
    assert request_overrides(request, "class", DERM) == {
        "n": 2,
        "seed": 3,
        "num_inference_steps": 2,
        "guidance_scale": 1.5,
        "eta": 0.0,
        "device": torch.device("cpu"),
        "category": ["MEL"],
    }


def test_defaults_one_output_per_request_and_blank_fields_count_as_not_given():
    assert request_overrides({}, "class", DERM) == {"n": 1}
    assert request_overrides({"category": "", "prompt": "  ", "seed": None}, "description", DERM) == {"n": 1}
    assert request_overrides({"category": "MEL, NV"}, "class", DERM)["category"] == ["MEL", "NV"]
    assert request_overrides({"category": ["BCC", "AK"]}, "description", DERM)["category"] == ["BCC", "AK"]


def test_cuda_falls_back_to_the_cpu_without_one_as_monai_labels_tasks_do():
    device = request_overrides({"device": ["cuda", "cpu"]}, "class", DERM)["device"]
    assert device == torch.device("cuda" if torch.cuda.is_available() else "cpu")


def test_free_text_is_de_identified_before_it_reaches_the_workflow():
    text = "Seen 03/04/2021 by Dr. Smith: a pink nodule"
    prompt = request_overrides({"prompt": text}, "description", DERM)["description"]
    report = request_overrides({"report": text}, "report")["report"]
    streams = request_overrides({"inputs": {"report": text}, "outputs": "frontal, lateral"}, "streams")
    for scrubbed in (prompt, report, streams["inputs"]["report"]):
        assert "03/04/2021" not in scrubbed and "Smith" not in scrubbed and "pink nodule" in scrubbed
    assert streams["outputs"] == ["frontal", "lateral"]


def test_report_and_stream_requests_map_to_their_config_ids():
    assert request_overrides({"report": "PI-RADS 5 lesion", "spacing": "1,1,2.5", "n": 2}, "report") == {
        "n": 2,
        "report": "PI-RADS 5 lesion",
        "spacing": [1.0, 1.0, 2.5],
    }
    assert request_overrides({"inputs": {"frontal": "views/f.png"}, "outputs": ["report"]}, "streams") == {
        "n": 1,
        "inputs": {"frontal": "views/f.png"},
        "outputs": ["report"],
    }


@pytest.mark.parametrize(
    "request_, kind, field",
    [
        ({"n": 0}, "class", "n"),
        ({"n": "two"}, "class", "n"),
        ({"n": True}, "class", "n"),
        ({"n": 3}, "class", "n"),  # 3 per class for all 7 classes: 21 outputs, more than 16
        ({"seed": -1}, "class", "seed"),
        ({"num_inference_steps": 1.5}, "class", "num_inference_steps"),
        ({"guidance_scale": "strong"}, "class", "guidance_scale"),
        ({"eta": 2}, "class", "eta"),
        ({"device": "tpu"}, "class", "device"),
        ({"device": 0}, "class", "device"),
        ({"category": "melanoma"}, "class", "category"),
        ({"category": 3}, "description", "category"),
        ({"prompt": "a nodule"}, "class", "prompt"),
        ({"prompt": ["a nodule"]}, "description", "prompt"),
        ({"report": "text"}, "description", "report"),
        ({"category": "MEL"}, "report", "category"),
        ({"report": 5}, "report", "report"),
        ({"spacing": [1, 1]}, "report", "spacing"),
        ({"spacing": "1,0,1"}, "report", "spacing"),
        ({"inputs": ["frontal"]}, "streams", "inputs"),
        ({"outputs": ["frontal", ""]}, "streams", "outputs"),
        ({"inputs": {"frontal": "f.png"}}, "class", "inputs"),
    ],
)
def test_bad_fields_are_refused_by_name(request_, kind, field):
    with pytest.raises(ValueError, match=rf"^{field}:"):
        request_overrides(request_, kind, DERM)


def test_request_overrides_refuses_an_unknown_kind_and_a_request_that_is_not_a_mapping():
    with pytest.raises(ValueError, match="^kind:"):
        request_overrides({}, "segmentation")
    with pytest.raises(ValueError, match="^request:"):
        request_overrides(["MEL"], "class", DERM)


def test_a_task_describes_what_its_requests_take():
    task = GenerationTask(BUNDLES / "vap_diffusion_derm", "unused")
    info = task.info()
    assert info["bundle"] == "vap_diffusion_derm" and info["kind"] == "description" and info["dimension"] == 2
    assert info["fields"] == list(COMMON_FIELDS + KIND_FIELDS["description"])
    assert info["options"]["category"] == DERM and info["options"]["n"] == 1 and info["options"]["prompt"] == ""
    assert task.is_valid()
    report = GenerationTask(BUNDLES / "ccella_prostate_mri", "unused")
    assert report.kind == "report" and report.dimension == 3 and "report" in report.options()
    assert not report.is_valid()  # in development: no weights shipped


def test_a_task_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="bundle_root"):
        GenerationTask(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="max_outputs"):
        GenerationTask(BUNDLES / "ldm_label_derm", tmp_path, max_outputs=0)


def test_a_request_runs_the_bundles_inference_workflow_and_returns_the_image_and_its_sidecar(tmp_path):
    task = GenerationTask(BUNDLES / "ldm_label_derm", tmp_path / "generated")
    request = {
        "model": "ldm_label_derm",
        "image": "",
        "description": task.description,
        "device": "cuda",
        "category": "MEL",
        "n": 1,
        "seed": 5,
        "num_inference_steps": 2,
    }
    copy, result = task(request)
    try:
        generated = Path(result["file"])
        assert generated.parent.parent == tmp_path / "generated" / "ldm_label_derm"
        assert generated.name == "MEL_000005.png" and Path(copy).suffix == ".png"
        assert Path(copy).read_bytes() == generated.read_bytes() and Path(copy) != generated
        assert Image.open(copy).size == (64, 64)
        sidecar = result["sidecar"]
        assert sidecar == json.loads(generated.with_suffix(".json").read_text())
        assert (sidecar["id"], sidecar["category"], sidecar["seed"], sidecar["steps"]) == ("MEL_000005", "MEL", 5, 2)
        assert sidecar["bundle"]["name"] == "ldm_label_derm" and set(sidecar["bundle"]["weights_sha256"]) == {
            "autoencoder.pt",
            "diffusion.pt",
        }
        assert result["outputs"] == [
            {"id": "MEL_000005", "files": {"png": str(generated), "sidecar": str(generated.with_suffix(".json"))}}
        ]
        assert result["overrides"]["category"] == ["MEL"] and result["kind"] == "class"
        json.dumps(result)  # MONAI Label sends it as JSON
    finally:
        Path(copy).unlink()
    # the same ids at other settings go to a fresh folder: never an earlier output returned for them
    copy, again = task({**request, "num_inference_steps": 3, "category": "NV,MEL"})
    Path(copy).unlink()
    assert again["output_dir"] != result["output_dir"] and again["sidecar"]["steps"] == 3
    assert [o["id"] for o in again["outputs"]] == ["NV_000005", "MEL_000005"]
    # without copy_result the file in the output folder itself
    own, kept = GenerationTask(BUNDLES / "ldm_label_derm", tmp_path / "generated", copy_result=False)(request)
    assert own == kept["file"]


def test_a_bad_request_fails_before_any_workflow_is_built(tmp_path):
    task = GenerationTask(BUNDLES / "ldm_label_derm", tmp_path)
    with pytest.raises(ValueError, match="^category:"):
        task({"category": "melanoma"})
    assert not any(tmp_path.iterdir())


def test_infer_tasks_names_unknown_bundles_before_it_needs_monailabel(tmp_path):
    with pytest.raises(ValueError, match="^models:.*ccella_prostate_mri"):
        infer_tasks(BUNDLES, tmp_path, names="ldm_label_derm,ccella_prostate_mri")  # no weights shipped
    with pytest.raises(ValueError, match="^bundles_dir:"):
        infer_tasks(tmp_path, tmp_path)


def test_the_package_never_imports_monailabel_by_itself():
    code = (
        "import sys, medgen_monai.integrations.monailabel as m; "
        "assert not [k for k in sys.modules if k.split('.')[0] == 'monailabel'], 'monailabel imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_without_monailabel_the_error_says_where_the_install_is_described(monkeypatch, tmp_path):
    try:
        import monailabel  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("monailabel is importable here")
    monkeypatch.setenv("MEDGEN_MONAILABEL_PATH", str(tmp_path / "missing"))
    with pytest.raises(ImportError, match="MEDGEN_MONAILABEL_PATH.*not a folder"):
        import_monailabel()
    monkeypatch.delenv("MEDGEN_MONAILABEL_PATH")
    with pytest.raises(ImportError, match="docs/monai.md"):
        import_monailabel()
