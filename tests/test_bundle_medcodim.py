"""The MedCoDi-M bundle end to end with tiny configs: cxr phantoms in the MIMIC-CXR-JPG layout -> every training
stage through the bundle's own configs (autoencoder on both views, report VAE, aligned encoders, the three streams,
the joint connectors; 2 iterations each) -> every task of the issue through ``monai.bundle run`` with
``inputs`` / ``outputs`` overrides: PNGs, report texts, sidecars, and one synthetic DICOM study per request."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest

from medgen_monai.cli import _run_bundle
from medgen_monai.data import read_dataset, split_datalist, write_dataset
from medgen_monai.engines import prompt_options, stream_requests
from medgen_monai.io.dicom import marking_problems
from medgen_monai.io.weights import load_weights
from medgen_monai.phantoms import get_phantom

ROOT = Path(__file__).parents[1]
BUNDLE = ROOT / "bundles" / "medcodim_cxr"
TINY = {
    "image_size": [16, 16],
    "autoencoder_def#channels": [8, 8],
    "autoencoder_def#attention_levels": [False, False],
    "autoencoder_def#norm_num_groups": 4,
    "image_stream_def#channels": [16, 32],
    "image_stream_def#attention_levels": [False, True],
    "image_stream_def#num_head_channels": 16,
    "image_stream_def#norm_num_groups": 8,
    "report_latent_dim": 8,
    "report_max_length": 160,
    "report_vae_def#hidden_size": 32,
    "report_vae_def#encoder_layers": 1,
    "report_vae_def#decoder_layers": 1,
    "report_vae_def#heads": 2,
    "aligned_def#channels": [8, 16],
    "condition_dim": 16,
    "report_stream_def#channels": [32, 16],
    "report_stream_def#attention_tokens": 2,
    "text_max_length": 32,
}
STAGES = (
    ("train_autoencoder.json", {}),
    ("train_report_vae.json", {}),
    ("train_alignment.json", {}),
    ("train_stream.json", {"stream": "frontal"}),
    ("train_stream.json", {"stream": "lateral"}),
    ("train_stream.json", {"stream": "report"}),
    ("train_joint.json", {}),
)


def _tiny_config(path: Path) -> None:
    config = json.loads(path.read_text())
    for key, value in TINY.items():
        *parents, last = key.split("#")
        node = config
        for part in parents:
            node = node[part]
        node[last] = value
    path.write_text(json.dumps(config, indent=4))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> dict:
    """A copy of the bundle with tiny sizes, every stage trained for 2 iterations into its models/."""
    root = tmp_path_factory.mktemp("medcodim")
    data = write_dataset("mimic_cxr", get_phantom("cxr").generate_many(24, seed=5), root / "data")
    copy = root / "bundle"
    shutil.copytree(BUNDLE, copy, ignore=shutil.ignore_patterns("models", "train", "output"))
    _tiny_config(copy / "configs" / "inference.json")
    (copy / "models").mkdir()
    for config, overrides in STAGES:
        _run_bundle(
            copy,
            ["inference.json", "train_common.json", config],
            dataset_dir=str(data),
            max_iterations=2,
            train_batch_size=4,
            sample_every=2,
            progress=False,
            train_root=str(copy / "train"),
            trained_model_dir=str(copy / "models"),
            **overrides,
        )
    return {"root": copy, "data": data}


def generate(bundle: dict, out: Path, **overrides) -> list[dict]:
    _run_bundle(
        bundle["root"], ["inference.json"], output_dir=str(out), num_inference_steps=2, progress=False, **overrides
    )
    return [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]


def test_every_stage_writes_checked_weights_and_previews(bundle):
    models = bundle["root"] / "models"
    roles = {
        "autoencoder": "autoencoder",
        "report_vae": "report vae",
        "alignment": "aligned encoders",
        "frontal": "frontal stream",
        "lateral": "lateral stream",
        "report": "report stream",
        "joint": "joint",
    }
    for name, role in roles.items():
        extra = load_weights(models / f"{name}.pt", bundle="medcodim_cxr", role=role)
        assert extra["iterations"] == 2, name
    for stream in ("frontal", "lateral", "report"):
        assert load_weights(models / f"{stream}.pt")["scale_factor"] > 0
    train = bundle["root"] / "train"
    assert (train / "report_vae" / "samples" / "iteration_0000002.txt").is_file()
    assert (train / "frontal" / "samples" / "iteration_0000002.png").is_file()
    assert (train / "joint" / "samples" / "iteration_0000002.png").is_file()


@pytest.mark.parametrize(
    "inputs, outputs",
    [
        (["frontal"], ["lateral"]),
        (["lateral"], ["frontal"]),
        (["frontal"], ["report"]),
        (["frontal", "lateral"], ["report"]),
        (["report"], ["frontal", "lateral"]),
        (["report", "frontal"], ["lateral"]),
        ([], ["frontal", "lateral", "report"]),
    ],
)
def test_every_task_writes_its_outputs_with_sidecars(bundle, tmp_path, inputs, outputs):
    study = split_datalist(read_dataset("mimic_cxr", bundle["data"]))["test"][0]
    given = {m: study["text"] if m == "report" else study[m] for m in inputs}
    sidecars = generate(bundle, tmp_path, inputs=given, outputs=outputs, n=2)
    assert len(sidecars) == 2
    for sidecar in sidecars:
        assert sidecar["outputs"] == outputs and sidecar["sampler"] == "rflow" and sidecar["steps"] == 2
        assert set(sidecar["inputs"]) == set(inputs)
        for modality, value in sidecar["inputs"].items():  # an image input by its checksum, never its path
            assert ("file_sha256" in value) if modality != "report" else value == study["text"]
        for stream in outputs:
            suffix = ".txt" if stream == "report" else ".png"
            assert (tmp_path / f"{sidecar['id']}_{stream}{suffix}").is_file()
        if "report" in outputs:
            assert isinstance(sidecar["generated"]["report"], str)
        assert sidecar["joint_generation"] == (len(outputs) > 1)  # the tiny bundle has trained connectors
    # the same seeds again: nothing is regenerated, the same files stay
    before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    generate(bundle, tmp_path, inputs=given, outputs=outputs, n=2)
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_a_request_is_one_synthetic_dicom_study(bundle, tmp_path):
    study = split_datalist(read_dataset("mimic_cxr", bundle["data"]))["test"][0]
    (sidecar,) = generate(
        bundle,
        tmp_path,
        inputs={"frontal": study["frontal"]},
        outputs=["lateral", "report"],
        n=1,
        formats=["png", "dicom"],
    )
    folder = tmp_path / f"{sidecar['id']}_dcm"
    files = sorted(folder.glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    assert len({str(ds.StudyInstanceUID) for ds in datasets}) == 1
    assert len({str(ds.SeriesInstanceUID) for ds in datasets}) == len(datasets)
    lateral = pydicom.dcmread(folder / "lateral.dcm")
    assert lateral.ViewPosition == "LL" and list(lateral.PatientOrientation) == ["P", "F"]
    for ds in datasets:
        assert marking_problems(ds) == []
    if (folder / "report.dcm").is_file():
        assert pydicom.dcmread(folder / "report.dcm").Modality == "SR"
    assert sidecar["dicom"]["study_uid"] == str(lateral.StudyInstanceUID)


def test_requests_for_other_outputs_than_the_networks_are_refused(bundle, tmp_path):
    requests = stream_requests(1, 0, {}, ["lateral"])
    with pytest.raises(ValueError, match="outputs other than the network"):
        generate(bundle, tmp_path, requests=requests, outputs=["frontal", "lateral", "report"])


def test_bad_tasks_get_one_clear_error(bundle, tmp_path):
    with pytest.raises(ValueError, match="both an input and an output"):
        generate(bundle, tmp_path, inputs={"frontal": "x.png"}, outputs=["frontal"])
    with pytest.raises(ValueError, match="unknown modalities"):
        generate(bundle, tmp_path, inputs={"audio": "x"}, outputs=["frontal"])


def test_requests_and_prompt_options():
    assert prompt_options("frontal", ["frontal", "lateral", "report"]) == [
        ["lateral"],
        ["report"],
        ["lateral", "report"],
    ]
    requests = stream_requests(2, 7, {"frontal": "x.png"}, "lateral,report")
    assert [r["seed"] for r in requests] == [7, 8] and requests[0]["outputs"] == ["lateral", "report"]
    other = stream_requests(2, 7, {"frontal": "y.png"}, "lateral,report")
    assert {r["id"] for r in requests}.isdisjoint(r["id"] for r in other)  # other inputs, other outputs
    scrubbed = stream_requests(1, 0, {"report": "Seen by Dr. Gregory House. Cardiomegaly."}, ["frontal"])
    assert "House" not in scrubbed[0]["inputs"]["report"] and "Cardiomegaly" in scrubbed[0]["inputs"]["report"]
    with pytest.raises(ValueError, match="outputs"):
        stream_requests(1, 0, {}, [])


def test_the_train_command_knows_every_stage(tmp_path):
    from medgen_monai.cli import train

    with pytest.raises(ValueError, match="has the stages"):
        train(str(BUNDLE), "diffusion")
    with pytest.raises(ValueError, match="--stream"):
        train(str(BUNDLE), "stream")
    with pytest.raises(ValueError, match="--stream"):
        train(str(BUNDLE), "joint", stream="frontal")


def test_benchmark_scores_every_task_and_its_report_metrics_can_fail(bundle, tmp_path):
    from benchmark_helpers import load_benchmark

    medcodi = load_benchmark("medcodi")
    out = tmp_path / "medcodi.json"
    assert (
        medcodi.main(
            [
                "--stages",
                "tasks,joint",
                "--bundle-dir",
                str(bundle["root"]),
                "--n",
                "4",
                "--steps",
                "2",
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert set(results["tasks"]) == set(medcodi.TASKS)
    lateral = results["tasks"]["frontal->lateral"]["lateral"]
    assert 0 <= lateral["valid_fraction"] <= 1 and lateral["fid_ratio"] > 0
    assert "consistency_frontal_to_lateral" in results["tasks"]["frontal->lateral"]
    assert "consistency_report_to_frontal" in results["tasks"]["report->frontal+lateral"]
    assert set(results["joint"]) == {"report->frontal+lateral", "unconditional->all"}
    assert results["tasks"]["frontal->lateral"]["joint_generation"] is False  # one output: the lateral alone
    assert results["joint"]["report->frontal+lateral"]["joint"]["joint_generation"] is True
    assert results["joint"]["report->frontal+lateral"]["independent"]["joint_generation"] is False
    report = results["tasks"]["frontal->report"]["report"]
    assert {"bleu1", "bleu4", "rouge_l", "label_f1"} <= set(report)
    # the report metrics on the studies' own reports are perfect, on other studies' reports they are not
    studies = medcodi.held_out_studies(4, tmp_path / "work")
    own = medcodi.score_reports([s["text"] for s in studies], studies)
    assert own["bleu4"] == pytest.approx(1.0) and own["label_f1"]["micro_f1"] == 1.0
    other = medcodi.score_reports([s["text"] for s in studies[1:] + studies[:1]], studies)
    assert other["bleu4"] < 0.9 and other["rouge_l"] < own["rouge_l"]


def test_pacs_run_pulls_a_frontal_view_and_its_report_and_pushes_the_lateral(bundle, orthanc, tmp_path):
    """A study with a frontal radiograph (ViewPosition PA, 16-bit) and an identifiable SR report: pacs-run generates
    what the study lacks (the lateral view) from both, and pushes it as a new synthetic study; nothing identifying
    arrives, and the view's file path never reaches a sidecar."""
    import io

    import highdicom as hd
    import numpy as np
    from pacs_helpers import IDENTIFYING, identifiable_study, identify

    from medgen_monai import cli
    from medgen_monai.io.pacs import PacsClient

    study = split_datalist(read_dataset("mimic_cxr", bundle["data"]))["test"][0]
    orthanc.clear()
    study_uid, uids, files = identifiable_study(tmp_path / "input", study["text"] + " Seen by Dr. Gregory House.")
    pixels = np.asarray(__import__("PIL.Image").Image.open(study["frontal"]), dtype=np.uint16) * 16  # 12-bit
    frontal = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=16,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=pydicom.uid.generate_uid(),
        series_number=3,
        sop_instance_uid=pydicom.uid.generate_uid(),
        instance_number=1,
        manufacturer="X-Ray Inc",
        patient_orientation=("L", "F"),
    )
    identify(frontal)
    frontal.ViewPosition = "PA"
    frontal.save_as(tmp_path / "input" / "frontal.dcm", enforce_file_format=True)
    files = [files[1], tmp_path / "input" / "frontal.dcm"]  # the report and the frontal view (not the RGB image)
    assert PacsClient.from_url(orthanc.dicom_url).store(files) == 2
    out = tmp_path / "out"
    summary = json.loads(
        cli.pacs_run(str(bundle["root"]), orthanc.dicom_url, study_uid, str(out), n=1, steps=2, progress=False)
    )
    assert summary["report_used"] and summary["synthetic_study"] not in uids
    (sidecar,) = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert sidecar["outputs"] == ["lateral"] and set(sidecar["inputs"]) == {"frontal", "report"}
    assert "file_sha256" in sidecar["inputs"]["frontal"] and "House" not in sidecar["inputs"]["report"]
    arrived = orthanc.study_instances(summary["synthetic_study"])
    assert len(arrived) == summary["instances_pushed"] == 1
    data = orthanc.instance_file(arrived[0])
    for value in [*IDENTIFYING.values(), *uids, "House", "X-Ray Inc"]:
        assert value.encode() not in data, f"{value!r} of the input reached the PACS"
    ds = pydicom.dcmread(io.BytesIO(data))
    assert ds.ViewPosition == "LL" and ds.ConversionType == "SYN" and ds.PatientID.startswith("SYN")
    with pytest.raises(ValueError, match="only for multi-stream bundles"):
        cli.pacs_run(
            str(BUNDLE.parent / "ldm_label_derm"), orthanc.dicom_url, study_uid, str(tmp_path / "o2"), outputs="lateral"
        )
    orthanc.clear()


def test_the_bundle_ships_when_every_weights_file_its_config_loads_is_there(bundle):
    from medgen_monai.engines import shipped_bundles
    from medgen_monai.engines.bundles import weights_files

    names = {p.name for p in weights_files(BUNDLE)}
    assert names == {"autoencoder.pt", "report_vae.pt", "alignment.pt", "frontal.pt", "lateral.pt", "report.pt"}
    assert bundle["root"] in shipped_bundles(bundle["root"].parent)  # the tiny copy has them all
    assert BUNDLE not in shipped_bundles(BUNDLE.parent)


def test_monais_inference_workflow_finds_every_property_and_runs(bundle, tmp_path):
    from workflow_helpers import run_infer_workflow

    out = tmp_path / "out"
    workflow = run_infer_workflow(
        bundle["root"], output_dir=str(out), n=1, num_inference_steps=2, progress=False, outputs=["lateral", "report"]
    )
    record = json.loads((out / f"{workflow.dataset[0]['id']}.json").read_text())
    assert sorted(record["outputs"]) == ["lateral", "report"]


@pytest.mark.slow
def test_prompt_ablation_trains_both_arms_from_the_shared_stages(bundle, tmp_path):
    from benchmark_helpers import load_benchmark

    medcodi = load_benchmark("medcodi")
    out = tmp_path / "medcodi.json"
    assert (
        medcodi.main(
            [
                "--stages",
                "prompts",
                "--bundle-dir",
                str(bundle["root"]),
                "--n",
                "4",
                "--steps",
                "2",
                "--seeds",
                "0",
                "--iterations",
                "2",
                "--data",
                str(bundle["data"]),
                "--train-batch-size",
                "4",
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    results = json.loads(out.read_text())
    assert set(results["prompts"]) == {"multi", "single"}
    single = json.loads((tmp_path / "work" / "prompts_single_seed0" / "configs" / "train_stream.json").read_text())
    assert single["arm_prompt_options"]["frontal"] == [["report"]]
    assert any(k.endswith("attribute_accuracy") for k in results["prompts"]["single"]["summary"])
