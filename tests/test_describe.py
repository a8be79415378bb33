"""medgen_monai.describe: tasks, prompts, validation, the oracle backend, describe_dataset and the CLI."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from medgen_monai import cli
from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.describe import (
    OracleDescriber,
    build_messages,
    category_slug,
    cxr_category,
    describe_dataset,
    get_task,
    validate,
)
from medgen_monai.describe.prompts import SYSTEM_PROMPT
from medgen_monai.describe.run import read_bank_lines
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.base import sample_rng

LAYOUTS = {"derm": "isic", "colon": "kvasir", "cxr": "mimic_cxr"}
N = 20
BANK_KEYS = {"id", "image", "category", "description", "attributes", "task", "backend", "model"}
REJECTED_KEYS = {"id", "image", "category", "reasons", "raw", "task", "backend", "model"}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("phantoms")
    return {
        kind: write_dataset(layout, get_phantom(kind).generate_many(N, seed=3), root / kind)
        for kind, layout in LAYOUTS.items()
    }


def _datalist(datasets: dict[str, Path], kind: str) -> list[dict]:
    return read_dataset(LAYOUTS[kind], datasets[kind])


def _bank_files(bank: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(bank.iterdir()) if p.is_file()}


# ---- tasks -----------------------------------------------------------------------------------------
def test_cxr_category_is_the_most_acute_finding():
    assert cxr_category(["Pleural Effusion", "Cardiomegaly"]) == "Pleural Effusion"
    assert cxr_category(["Support Devices", "Pneumothorax", "Lung Opacity"]) == "Pneumothorax"
    assert cxr_category("Cardiomegaly+Support Devices") == "Cardiomegaly"
    assert cxr_category(["No Finding"]) == "No Finding"
    for bad, message in (
        (["Atelectasis"], "unknown class"),
        ([], "no positive class"),
        (["No Finding", "Cardiomegaly"], "cannot be combined"),
        (["Cardiomegaly"] * 2, "repeated"),
    ):
        with pytest.raises(ValueError, match=message):
            cxr_category(bad)


def test_cxr_class_constraints_follow_the_priority():
    task = get_task("cxr")
    normal = task.class_constraints("No Finding")
    assert normal["heart_size"] == ("normal",) and all(normal[n] == ("none",) for n in normal if n != "heart_size")
    effusion = task.class_constraints("Pleural Effusion")
    assert "none" not in effusion["effusion_side"] + effusion["effusion_size"]
    assert effusion["pneumothorax"] == ("none",)  # more acute: absent
    assert effusion["heart_size"] == ("normal", "enlarged") and "none" in effusion["opacity_lobe"]  # less acute: free
    cardiomegaly = {
        "heart_size": "enlarged",
        "effusion_side": "none",
        "effusion_size": "none",
        "opacity_lobe": "none",
        "opacity_side": "none",
        "pneumothorax": "none",
        "device": "pacemaker",
    }
    assert task.consistent("Cardiomegaly", cardiomegaly) == []
    assert any("imply 'Cardiomegaly'" in r for r in task.consistent("Support Devices", cardiomegaly))
    unpaired = dict(cardiomegaly, effusion_side="left")  # a side without a size
    assert any(
        "Pleural Effusion: effusion_side='left', effusion_size='none' disagree" in r
        for r in task.consistent("Cardiomegaly", unpaired)
    )
    with pytest.raises(ValueError, match=r"unknown category 'Cardiomegaly\+Pleural Effusion'"):
        task.class_constraints("Cardiomegaly+Pleural Effusion")


def test_derm_has_no_class_constraint_and_colon_uses_class_support():
    derm, colon = get_task("derm"), get_task("colon")
    assert derm.class_constraints("MEL") == {a.name: a.values for a in derm.attributes}
    assert colon.class_constraints("dyed-lifted-polyps")["colour"] == ("blue_dyed",)
    assert set(colon.class_constraints("normal-cecum").values()) == {("none",)}
    with pytest.raises(ValueError, match="unknown category 'esophagitis'"):
        colon.class_constraints("esophagitis")


@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_compose_is_valid_short_and_tells_attributes_apart(kind):
    """Oracle answers of many phantom draws validate; the text (with one fixed rng) identifies the attributes."""
    phantom, task = get_phantom(kind), get_task(kind)
    oracle = OracleDescriber(task, seed=0)
    attributes_of_text: dict[str, str] = {}
    for index in range(400):
        label, attributes = phantom.draw(sample_rng(0, index, 0), None, {})
        record = {
            "id": f"case{index}",
            "label_name": label if isinstance(label, str) else list(label),
            "attributes": attributes,
        }
        category = task.category(record)
        verdict = validate(task, oracle.describe([None], [record])[0], category)
        assert verdict.ok, verdict.reasons
        assert verdict.attributes == task.check_attributes(attributes)
        text = task.compose(attributes, np.random.default_rng(0), category)
        key = json.dumps([category, verdict.attributes], sort_keys=True)
        assert attributes_of_text.setdefault(text, key) == key, f"two attribute sets give {text!r}"


def test_compose_varies_phrasing_and_rejects_bad_attributes():
    task = get_task("derm")
    attributes = {
        "shape": "oval",
        "size": "small",
        "colour": "red",
        "border": "well_defined",
        "pattern": "globules",
        "position": "centre",
    }
    texts = {task.compose(attributes, np.random.default_rng(seed), "VASC") for seed in range(20)}
    assert len(texts) > 5 and all("vascular lesion" in t for t in texts)
    with pytest.raises(ValueError, match="'size' has value 'huge'"):
        task.compose({**attributes, "size": "huge"}, np.random.default_rng(0))


# ---- prompts ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, category", [("derm", "MEL"), ("colon", "ulcerative-colitis"), ("cxr", "Cardiomegaly")])
def test_prompt_lists_the_vocabulary_and_hides_the_class(kind, category):
    task = get_task(kind)
    messages = build_messages(task)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"][0] == {"type": "image"}
    text = messages[1]["content"][1]["text"]
    for step in ("Step 1", "Step 2", "Step 3", '"description"'):
        assert step in text
    for attribute in task.attributes:
        assert attribute.name in text and all(f'"{v}"' in text for v in attribute.values)
    class_text = task.class_text(category)
    assert class_text not in text.lower()
    revealed = build_messages(task, category, reveal_class=True)[1]["content"][1]["text"]
    assert f"labelled: {class_text}" in revealed
    merged = build_messages(task, system=False)
    assert [m["role"] for m in merged] == ["user"] and merged[0]["content"][1]["text"].startswith(SYSTEM_PROMPT)


# ---- validation ------------------------------------------------------------------------------------
BASE = {
    "derm": (
        "MEL",
        {
            "shape": "irregular",
            "size": "large",
            "colour": "black",
            "border": "ill_defined",
            "pattern": "network",
            "position": "centre",
        },
        "A large, irregular, black lesion in the centre with an ill-defined border and a pigment network.",
    ),
    "colon": (
        "polyps",
        {
            "finding": "polyp",
            "morphology": "sessile",
            "size": "small",
            "surface": "smooth",
            "colour": "red",
            "location": "upper_left",
        },
        "A small sessile polyp in the upper left of the view. It is red with a smooth surface.",
    ),
    "cxr": (
        "Pleural Effusion",
        {
            "heart_size": "enlarged",
            "effusion_side": "left",
            "effusion_size": "small",
            "opacity_lobe": "none",
            "opacity_side": "none",
            "pneumothorax": "none",
            "device": "none",
        },
        "The heart is enlarged. There is a small left pleural effusion, with no pneumothorax.",
    ),
}
MODALITY = {
    "derm": ("dermoscopy", "close-up of a skin lesion"),
    "colon": ("colonoscopy", "endoscopic view"),
    "cxr": ("chest radiograph", "PA frontal"),
}


def _answer(kind: str, **changes) -> dict:
    _, attributes, description = BASE[kind]
    answer = {
        "modality": MODALITY[kind][0],
        "view": MODALITY[kind][1],
        "attributes": dict(attributes),
        "description": description,
    }
    for key, value in changes.items():
        if key.startswith("attr_"):
            name = key[len("attr_") :]
            if value is None:
                answer["attributes"].pop(name)
            else:
                answer["attributes"][name] = value
        elif value is None:
            answer.pop(key)
        else:
            answer[key] = value
    return answer


@pytest.mark.parametrize("kind", list(BASE))
def test_valid_answer_inside_reasoning_and_code_fences_is_accepted(kind):
    category, attributes, description = BASE[kind]
    raw = (
        'Step 1: this is the expected image.\nStep 2: {"size": "draft"}\n'
        f"```json\n{json.dumps(_answer(kind))}\n```\nThat is my answer."
    )
    verdict = validate(kind, raw, category)
    assert verdict.ok, verdict.reasons
    assert verdict.attributes == attributes and verdict.description == description


CASES = [
    ("derm", "I cannot tell what this image shows.", "no_json"),
    ("derm", '{"modality": "dermoscopy", "view": "lesion", "attributes": {"shape": ', "malformed_json"),
    ("derm", _answer("derm", attr_asymmetry="yes"), "unknown_attribute"),
    ("derm", _answer("derm", attr_size="huge"), "out_of_vocabulary"),
    ("derm", _answer("derm", attr_border=None), "missing_attribute"),
    ("derm", _answer("derm", description=None), "missing_key"),
    ("derm", _answer("derm", attributes=["round"]), "bad_type"),
    ("derm", _answer("derm", description="   "), "empty_description"),
    ("derm", _answer("derm", modality="chest X-ray"), "wrong_modality"),
    ("derm", _answer("derm", description="One. Two. Three. Four."), "too_many_sentences"),
    (
        "derm",
        _answer("derm", description="A large oval black lesion with a pigment network."),
        "description_contradiction",
    ),
    (
        "colon",
        _answer(
            "colon",
            attr_colour="blue_dyed",
            description="A small sessile polyp in the upper left, stained blue with a smooth surface.",
        ),
        "class_contradiction",
    ),
    ("colon", _answer("colon", modality="dermoscopy"), "wrong_modality"),
    ("colon", _answer("colon", attr_morphology="none"), "class_contradiction"),
    (
        "cxr",
        _answer("cxr", attr_effusion_side="none", attr_effusion_size="none", description="The heart is enlarged."),
        "class_contradiction",
    ),
    ("cxr", _answer("cxr", attr_effusion_size="none", description="The heart is enlarged."), "class_contradiction"),
    ("cxr", _answer("cxr", attr_pneumothorax="right", description="The heart is enlarged."), "class_contradiction"),
    ("cxr", _answer("cxr", view="lateral"), "wrong_view"),
    (
        "cxr",
        _answer("cxr", description="The heart is enlarged with a large left pleural effusion."),
        "description_contradiction",
    ),
]


@pytest.mark.parametrize("kind, answer, code", CASES, ids=[f"{k}-{c}-{i}" for i, (k, _, c) in enumerate(CASES)])
def test_bad_answers_are_rejected_with_the_reason(kind, answer, code):
    raw = answer if isinstance(answer, str) else json.dumps(answer)
    verdict = validate(kind, raw, BASE[kind][0])
    assert not verdict.ok
    codes = [r.split(":", 1)[0] for r in verdict.reasons]
    assert code in codes, verdict.reasons


def test_validation_tolerates_value_spelling_and_negated_mentions():
    answer = _answer(
        "derm",
        attr_colour="Light Brown",
        attr_border="ill-defined",
        description="A large irregular light brown lesion, not oval, with no globules; a pigment network.",
    )
    verdict = validate("derm", json.dumps(answer), "NV")
    assert verdict.ok, verdict.reasons
    assert verdict.attributes["colour"] == "light_brown" and verdict.attributes["border"] == "ill_defined"
    # the class check keeps every reason, one per contradicting attribute
    normal = validate("cxr", json.dumps(_answer("cxr")), "No Finding")
    assert sum(r.startswith("class_contradiction") for r in normal.reasons) >= 3
    with pytest.raises(ValueError, match="unknown category"):
        validate("derm", json.dumps(_answer("derm")), "SCC")


# ---- describe_dataset with the oracle ---------------------------------------------------------------
@pytest.mark.parametrize("kind", list(LAYOUTS))
def test_oracle_bank_is_complete_and_a_rerun_skips_everything(datasets, kind, tmp_path):
    task = get_task(kind)
    datalist = _datalist(datasets, kind)
    bank = tmp_path / "bank"
    summary = describe_dataset(datalist, task, OracleDescriber(task, seed=0), bank, batch_size=6, progress=False)
    assert summary["accepted"] == summary["accepted_now"] == N and summary["rejected"] == 0
    assert summary["rejection_rate"] == 0.0 and not (bank / "rejected.jsonl").exists()

    meta = json.loads((bank / "bank.json").read_text())
    assert {"task", "backend", "model", "vocabulary", "counts", "rejected", "rejection_rate"} <= set(meta)
    assert meta["task"] == kind and meta["backend"] == "oracle" and meta["vocabulary"] == task.vocabulary()
    expected = {}
    for record in datalist:
        expected.setdefault(task.category(record), set()).add(record["id"])
    assert meta["counts"] == {c: len(ids) for c, ids in sorted(expected.items())}

    seen = []
    for category, ids in expected.items():
        lines = read_bank_lines(bank / f"{category_slug(category)}.jsonl")
        assert {line["id"] for line in lines} == ids
        for line in lines:
            assert set(line) == BANK_KEYS and line["category"] == category and line["task"] == kind
            assert Path(line["image"]).is_file() and line["description"]
            assert line["attributes"] == task.check_attributes(
                next(r for r in datalist if r["id"] == line["id"])["attributes"]
            )
        seen += [line["id"] for line in lines]
    assert len(seen) == len(set(seen)) == N

    before = _bank_files(bank)
    again = describe_dataset(datalist, task, OracleDescriber(task, seed=0), bank, progress=False)
    assert again["skipped"] == N and again["described"] == 0
    assert {k: v for k, v in _bank_files(bank).items() if k != "bank.json"} == {
        k: v for k, v in before.items() if k != "bank.json"
    }
    assert json.loads((bank / "bank.json").read_text())["counts"] == meta["counts"]


def test_limit_resume_and_a_truncated_line(datasets, tmp_path):
    task = get_task("colon")
    datalist = _datalist(datasets, "colon")
    bank = tmp_path / "bank"
    first = describe_dataset(datalist, task, OracleDescriber(task), bank, batch_size=4, progress=False, limit=7)
    assert first["described"] == 7 and first["accepted"] == 7
    # a killed run leaves half a line behind
    victim = next(bank.glob("*.jsonl"))
    with victim.open("a") as f:
        f.write('{"id": "half-written", "image": "x.j')
    with pytest.warns(UserWarning, match="incomplete"):
        second = describe_dataset(datalist, task, OracleDescriber(task), bank, batch_size=4, progress=False)
    assert second["skipped"] == 7 and second["described"] == N - 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = [line["id"] for path in bank.glob("*.jsonl") for line in read_bank_lines(path)]
    assert sorted(ids) == sorted(r["id"] for r in datalist)
    assert json.loads((bank / "bank.json").read_text())["accepted"] == N


@pytest.mark.parametrize(
    "kind, change, message",
    [
        ("derm", {"attributes": None}, "no 'attributes'"),
        ("derm", {"label_name": "SCC"}, "unknown class 'SCC'"),
        ("colon", {"label_name": "esophagitis"}, "unknown class 'esophagitis'"),
        ("cxr", {"label_name": ["Atelectasis"]}, "unknown class"),
        ("colon", {"attributes": {"finding": "polyp"}}, "missing"),
        ("cxr", {"frontal": "/nonexistent/frontal.jpg"}, "file not found"),
    ],
)
def test_a_corrupted_record_fails_before_any_work(datasets, tmp_path, kind, change, message):
    task = get_task(kind)
    datalist = _datalist(datasets, kind)
    bad = dict(datalist[5])
    for key, value in change.items():
        if value is None:
            bad.pop(key)
        else:
            bad[key] = value
    datalist[5] = bad
    with pytest.raises(ValueError, match=message) as error:
        describe_dataset(datalist, task, OracleDescriber(task), tmp_path / "bank", progress=False)
    assert bad["id"] in str(error.value)
    assert not list((tmp_path / "bank").glob("*.jsonl"))


def test_duplicate_ids_and_a_bank_of_another_task_are_errors(datasets, tmp_path):
    derm, colon = get_task("derm"), get_task("colon")
    datalist = _datalist(datasets, "derm")
    with pytest.raises(ValueError, match="appears twice"):
        describe_dataset(datalist + datalist[:1], derm, OracleDescriber(derm), tmp_path / "a", progress=False)
    describe_dataset(datalist, derm, OracleDescriber(derm), tmp_path / "b", progress=False, limit=3)
    with pytest.raises(ValueError, match="task 'derm'"):
        describe_dataset(_datalist(datasets, "colon"), colon, OracleDescriber(colon), tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="is for task 'derm'"):
        describe_dataset(datalist, colon, OracleDescriber(derm), tmp_path / "c", progress=False)


def test_bank_reads_back_with_the_bank_reader(datasets, tmp_path):
    bank_module = pytest.importorskip("medgen_monai.describe.bank")
    task = get_task("cxr")
    describe_dataset(_datalist(datasets, "cxr"), task, OracleDescriber(task), tmp_path / "bank", progress=False)
    bank = bank_module.DescriptionBank(tmp_path / "bank")
    meta = json.loads((tmp_path / "bank" / "bank.json").read_text())
    assert set(bank.categories) == set(meta["counts"])
    assert all(len(bank.records(c)) == n for c, n in meta["counts"].items())


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_describe_from_a_folder_and_from_a_json_datalist(datasets, tmp_path, capsys):
    cli.main(
        [
            "describe",
            "--images",
            str(datasets["derm"]),
            "--layout",
            "isic",
            "--task",
            "derm",
            "--backend",
            "oracle",
            "--out",
            str(tmp_path / "bank"),
            "--limit",
            "5",
            "--progress",
            "False",
        ]
    )
    out = capsys.readouterr().out
    assert "5 described, 5 accepted, 0 rejected" in out and "rejection rate 0.000" in out
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"training": _datalist(datasets, "derm")}))
    cli.main(
        [
            "describe",
            "--images",
            str(datalist),
            "--task",
            "derm",
            "--out",
            str(tmp_path / "bank"),
            "--progress",
            "False",
        ]
    )
    again = capsys.readouterr().out
    assert f"{N - 5} described" in again and "5 skipped" in again
    with pytest.raises(SystemExit):
        cli.main(["describe", "--images", str(tmp_path / "missing"), "--task", "derm", "--out", str(tmp_path / "x")])
    assert "neither a dataset folder nor a JSON datalist" in capsys.readouterr().err
