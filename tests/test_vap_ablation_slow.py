"""The VAP ablation script end to end in its smoke mode (2 training iterations per arm): every arm trains through
the bundle's configs, generates both splits and is scored; the JSON has the documented shape."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_quick_ablation_writes_the_documented_shape(tmp_path):
    import vap_ablation

    work = str(tmp_path / "work")
    # two invocations, one seed each (as two sessions would run them): the second merges into the first's results
    assert vap_ablation.main(["--quick", "--modalities", "derm", "--seeds", "1", "--work_dir", work]) == 0
    assert (
        vap_ablation.main(["--quick", "--modalities", "derm", "--seeds", "0", "--work_dir", work, "--jobs", "2"]) == 0
    )
    out = tmp_path / "work_quick"
    # a third invocation finds every arm of both seeds measured with these settings and trains nothing
    settings = json.loads((out / "vap_ablation_runs.json").read_text())["settings"]["derm"]
    measured = vap_ablation.already_measured(out / "vap_ablation.json", "derm", settings)
    assert measured == {(s, c) for s in (0, 1) for c in vap_ablation.CONDITIONS}
    assert vap_ablation.already_measured(out / "vap_ablation.json", "derm", {**settings, "steps": 3}) == set()
    # runs scored against the old references (no "reference" setting) count as measured with other settings
    assert settings["reference"] == vap_ablation.REFERENCE_METHOD
    old = {k: v for k, v in settings.items() if k != "reference"}
    assert vap_ablation.already_measured(out / "vap_ablation.json", "derm", old) == set()
    summary = json.loads((out / "vap_ablation.json").read_text())
    assert list(summary) == ["derm"]
    assert list(summary["derm"]) == list(vap_ablation.CONDITIONS)
    for condition in vap_ablation.CONDITIONS:
        assert list(summary["derm"][condition]) == ["seen", "heldout"]
        for split in ("seen", "heldout"):
            for metric in ("attribute_accuracy", "fid", "diversity"):
                cell = summary["derm"][condition][split][metric]
                assert set(cell) == {"mean", "sd"} and cell["mean"] == cell["mean"]  # not NaN
            for metric in ("fid_ratio", "kid"):  # from the per-run floors and KIDs
                cell = summary["derm"][condition][split][metric]
                assert set(cell) == {"mean", "sd"} and cell["mean"] == cell["mean"]
    runs = json.loads((out / "vap_ablation_runs.json").read_text())
    assert runs["heldout_combinations"]["derm"] == vap_ablation.HELDOUT["derm"]
    assert [r["seed"] for r in runs["runs"]["derm"]["runs"]["label"]["seen"]] == [0, 1]
    assert (out / "vap_ablation.png").is_file()
    requests = json.loads((out / "derm" / "requests.json").read_text())
    # held-out combinations never reach training: every held-out request shows one, no training record does
    for request in requests["heldout"]:
        assert vap_ablation.matches(request["attributes"], vap_ablation.HELDOUT["derm"])
    # every run reports the FID floor at the generated set's n and class counts, the FID / floor ratio and KID
    derm = runs["runs"]["derm"]
    for split in vap_ablation.SPLITS:
        floor = derm["reference"][split]["fid_floor"]
        assert floor["n"] == len(requests[split]) == derm["requests"][split]
        assert floor["counts"] == dict(sorted(Counter(r["category"] for r in requests[split]).items()))
        assert floor["repeats"] >= 10 and floor["mean"] > 0
        for condition in vap_ablation.CONDITIONS:
            for row in derm["runs"][condition][split]:
                assert row["fid_floor"] == {"mean": floor["mean"], "sd": floor["sd"]}
                assert row["fid_ratio"] == pytest.approx(row["fid"] / floor["mean"])
                assert set(row["kid"]) == {"mean", "ci95"} and row["kid"]["ci95"][0] <= row["kid"]["ci95"][1]
    # the old failure: each reference has the requests' class proportions (largest-remainder shares of its size),
    # is not the first records of the class-sorted test list, and leaves out the requests' own source images
    from medgen_monai.metrics.reference import largest_remainder

    reference = json.loads((out / "derm" / "reference.json").read_text())
    for split in vap_ablation.SPLITS:
        wanted = Counter(r["category"] for r in requests[split])
        got = Counter(r["category"] for r in reference[split])
        assert set(got) == set(wanted)
        assert dict(got) == largest_remainder(wanted, len(reference[split]))
        assert not {r["id"] for r in reference[split]} & {r["source"] for r in requests[split]}
        assert derm["reference"][split]["n"] == len(reference[split])
        assert derm["reference"][split]["sampling"]["seed"] == vap_ablation.REFERENCE_SEED

    # the projection sweep samples the prototype weights of both seeds at each alpha; alpha 0 and the ablation's alpha
    # must reproduce the ablation's own numbers for those conditions (the same requests, seeds and steps)
    import vap_projection_sweep

    sweep = tmp_path / "sweep.json"
    args = [
        "--modalities",
        "derm",
        "--alphas",
        "0,0.25,0.5",
        "--ablation_runs",
        str(out / "vap_ablation_runs.json"),
        "--work_dir",
        str(out),
        "--data_root",
        str(out / "data"),
        "--out",
        str(sweep),
    ]
    assert vap_projection_sweep.main(args) == 0
    result = json.loads(sweep.read_text())
    assert result["settings"]["derm"] == settings
    for alpha, expected in (("0", True), ("0.25", None), ("0.5", True)):
        rows = result["runs"]["derm"][alpha]["seen"]
        assert [r["seed"] for r in rows] == [0, 1]
        assert all(r["reproduces_ablation"] is expected for r in rows)
    assert result["summary"]["derm"]["0.25"]["heldout"]["fid"]["n"] == 2
    assert sweep.with_suffix(".png").is_file()
    with pytest.raises(ValueError, match=r"--alphas: each must be in \[0, 1\]"):
        vap_projection_sweep.main([*args[:2], "--alphas", "1.5"])


def test_runs_with_other_settings_are_not_merged(tmp_path):
    import vap_ablation

    out = tmp_path / "vap_ablation.json"
    runs = {
        c: {s: [{"seed": 0, "attribute_accuracy": 0.5, "fid": 1.0, "diversity": 0.1}] for s in vap_ablation.SPLITS}
        for c in vap_ablation.CONDITIONS
    }
    settings = {k: 1 for k in vap_ablation.COMPARABLE}
    summary = vap_ablation.record(out, "derm", {"runs": runs}, settings)
    assert summary["derm"]["label"]["seen"]["fid"] == {"mean": 1.0, "sd": 0.0}
    # another seed merges; the same seed replaces
    more = {
        c: {s: [{"seed": 1, "attribute_accuracy": 0.7, "fid": 3.0, "diversity": 0.3}] for s in vap_ablation.SPLITS}
        for c in vap_ablation.CONDITIONS
    }
    summary = vap_ablation.record(out, "derm", {"runs": more}, settings)
    assert summary["derm"]["label"]["heldout"]["fid"]["mean"] == 2.0
    with pytest.raises(ValueError, match="iterations"):
        vap_ablation.record(out, "derm", {"runs": more}, {**settings, "iterations": 2})
    # a modality with a condition not yet measured is left out of the summary, kept in the runs file
    partial = {c: {s: [] for s in vap_ablation.SPLITS} for c in vap_ablation.CONDITIONS}
    partial["label"] = runs["label"]
    summary = vap_ablation.record(out, "colon", {"runs": partial}, settings)
    assert list(summary) == ["derm"]
    assert json.loads(out.with_name("vap_ablation_runs.json").read_text())["runs"]["colon"]["runs"]["label"]["seen"]


def test_runs_under_the_old_references_are_another_setting(tmp_path):
    import vap_ablation

    out = tmp_path / "vap_ablation.json"
    runs = {
        c: {s: [{"seed": 0, "attribute_accuracy": 0.5, "fid": 1.0, "diversity": 0.1}] for s in vap_ablation.SPLITS}
        for c in vap_ablation.CONDITIONS
    }
    settings = {k: 1 for k in vap_ablation.COMPARABLE}
    old = {k: v for k, v in settings.items() if k != "reference"}  # as the runs file was written before the setting
    vap_ablation.record(out, "derm", {"runs": runs}, old)
    summary = json.loads(out.read_text())
    assert "fid_ratio" not in summary["derm"]["label"]["seen"]  # old rows have no floor: summarised without it
    assert vap_ablation.already_measured(out, "derm", settings) == set()
    # refused up front (plan_modality calls this before training), and again when recording
    with pytest.raises(ValueError, match="'reference': \\(None, 1\\)"):
        vap_ablation.check_settings(out, "derm", settings)
    with pytest.raises(ValueError, match="reference"):
        vap_ablation.record(out, "derm", {"runs": runs}, settings)
    vap_ablation.check_settings(out, "colon", settings)  # another modality is free
    import argparse

    args = argparse.Namespace(**{k: 1 for k in vap_ablation.COMPARABLE if k != "reference"})
    assert vap_ablation.settings_of(args)["reference"] == vap_ablation.REFERENCE_METHOD


def test_reference_is_stratified_to_the_requests_without_their_sources():
    import vap_ablation

    from medgen_monai.metrics.reference import largest_remainder

    # a class-sorted test list, as the readers return it: the first 100 records are all NV
    sizes = {"NV": 200, "MEL": 60, "BCC": 50, "DF": 12}
    records = [
        {"id": f"{c}_{i:03d}", "image": f"/data/{c}_{i:03d}.png", "label_name": c, "attributes": {}}
        for c, k in sizes.items()
        for i in range(k)
    ]
    records.append(
        {
            "id": "held",
            "image": "/data/held.png",
            "label_name": "MEL",
            "attributes": dict(vap_ablation.HELDOUT["derm"][0]),
        }
    )
    requests = [{"category": c, "source": f"{c}_{i:03d}"} for c in ("NV", "MEL", "BCC") for i in range(8)]
    requests += [{"category": "MEL", "source": "MEL_039"}]
    drawn = vap_ablation.draw_reference("derm", "seen", records, requests, cap=100)
    wanted = Counter(r["category"] for r in requests)
    assert Counter(drawn.classes) == largest_remainder(wanted, 100) == {"NV": 32, "MEL": 36, "BCC": 32}
    ids = [r["id"] for r in drawn.records]
    assert not set(ids) & {r["source"] for r in requests} and "held" not in ids and drawn.excluded == 25
    assert all(r["label_name"] == c for r, c in zip(drawn.records, drawn.classes))
    # the same seed, the same draw, whatever the records' order
    again = vap_ablation.draw_reference("derm", "seen", records[::-1], requests, cap=100)
    assert [r["id"] for r in again.records] == ids
    # short classes shrink the reference (proportions kept); a requested class with no record left is refused
    small = vap_ablation.draw_reference("derm", "seen", records, requests, cap=400)
    assert len(small) < 400 and Counter(small.classes) == largest_remainder(wanted, len(small))
    with pytest.raises(ValueError, match="raise --test_cases"):
        vap_ablation.draw_reference("derm", "heldout", records, requests, cap=100)


def _write_png(path: Path, value: int, channels: int) -> None:
    import numpy as np

    from medgen_monai.io.writers import save_image_2d

    path.parent.mkdir(parents=True, exist_ok=True)
    save_image_2d(np.full((8, 8, 3) if channels == 3 else (8, 8), value, dtype=np.uint8), path)


def test_samples_figure_shows_every_condition_under_the_source_image(tmp_path):
    import vap_ablation
    import vap_ablation_samples

    combos = vap_ablation.HELDOUT["cxr"]
    requests = [
        {"id": f"heldout_{i:03d}", "category": "Cardiomegaly", "attributes": dict(combos[i % 2]), "source": f"src{i}"}
        for i in range(5)
    ]
    work = tmp_path / "cxr"
    work.mkdir()
    (work / "requests.json").write_text(json.dumps({"seen": [], "heldout": requests}))
    bank = []
    for i in range(5):
        _write_png(tmp_path / "real" / f"src{i}.png", 10 * i, channels=1)
        bank.append(
            json.dumps(
                {
                    "id": f"src{i}",
                    "image": str(tmp_path / "real" / f"src{i}.png"),
                    "category": "Cardiomegaly",
                    "description": "A frontal chest radiograph.",
                }
            )
        )
    (work / "test_bank").mkdir()
    (work / "test_bank" / "Cardiomegaly.jsonl").write_text("\n".join(bank) + "\n")
    picked = vap_ablation_samples.pick_requests(requests, combos, 3)
    assert [r["id"] for r in picked] == ["heldout_000", "heldout_001", "heldout_002"]  # the combinations take turns
    both = [{"id": "a", "attributes": {**combos[0], **combos[1]}}, {"id": "b", "attributes": dict(combos[1])}]
    assert [r["id"] for r in vap_ablation_samples.pick_requests(both, combos, 3)] == ["a", "b"]  # each request once
    seen = [{"id": f"s{i}", "category": "AB"[i // 3], "attributes": {}} for i in range(6)]
    assert [r["id"] for r in vap_ablation_samples.pick_requests(seen, [], 4)] == ["s0", "s3", "s1", "s4"]  # categories
    for condition in vap_ablation.CONDITIONS[:-1]:
        for r in picked:
            _write_png(work / condition / "seed2" / "heldout" / f"{r['id']}.png", 100, channels=3)
    with pytest.raises(ValueError, match="description_prototype_projection.*seed 2"):
        vap_ablation_samples.sample_figure("cxr", work, 2, tmp_path / "fig.png", columns=3)
    assert not (tmp_path / "fig.png").exists()
    for r in picked:
        _write_png(work / "description_prototype_projection" / "seed2" / "heldout" / f"{r['id']}.png", 100, channels=3)
    out = vap_ablation_samples.sample_figure("cxr", work, 2, tmp_path / "fig.png", columns=3)
    from PIL import Image

    with Image.open(out) as figure:
        # 5 rows (the real image + 4 conditions) of 3 columns at 1.9 inches each (+1.2 for the row labels), 90 dpi
        assert figure.size == (round((1.9 * 3 + 1.2) * 90), round(1.9 * 5 * 90))
    with pytest.raises(ValueError, match="seed 0"):
        vap_ablation_samples.sample_figure("cxr", work, 0, tmp_path / "fig0.png", columns=3)
    # a subset of the conditions: one row fewer
    out = vap_ablation_samples.sample_figure(
        "cxr", work, 2, tmp_path / "fig3.png", columns=3, conditions=vap_ablation.CONDITIONS[1:]
    )
    with Image.open(out) as figure:
        assert figure.size[1] == round(1.9 * 4 * 90)
    with pytest.raises(ValueError, match="conditions must be some of"):
        vap_ablation_samples.sample_figure("cxr", work, 2, tmp_path / "fig4.png", conditions=["labels"])
