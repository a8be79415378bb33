"""The description bank reader: categories, seeded retrieval, errors, statistics, dataset joins, held-out splits."""

from __future__ import annotations

import json
import warnings

import pytest
from bank_helpers import derm_record, write_bank

from medgen_monai.describe.bank import DescriptionBank, attach_descriptions, exclude_combinations


def _records() -> list[dict]:
    colours = ["light_brown", "dark_brown", "black", "red", "blue_grey"]
    mel = [
        derm_record(f"ISIC_{i:07d}", "MEL", colour=colours[i % 5], shape="irregular" if i % 2 else "oval")
        for i in range(10)
    ]
    nv = [derm_record(f"ISIC_{i:07d}", "NV", size="medium") for i in range(10, 13)]
    return mel + nv


@pytest.fixture
def bank_dir(tmp_path):
    rejected = [
        {
            "id": "ISIC_0000099",
            "image": "x.jpg",
            "category": "MEL",
            "reasons": ["out_of_vocabulary: colour=green", "contradiction: MEL"],
            "raw": "{}",
            "task": "derm",
            "backend": "oracle",
            "model": "oracle",
        }
    ]
    return write_bank(tmp_path / "bank", _records(), rejected=rejected, empty_categories=["BCC"])


def test_categories_records_and_order(bank_dir):
    bank = DescriptionBank(bank_dir)
    assert bank.categories == ["MEL", "NV"]
    assert len(bank) == 13 and "MEL" in bank and "BCC" not in bank
    ids = [r["id"] for r in bank.records("MEL")]
    assert ids == sorted(ids) and len(ids) == 10
    assert bank.descriptions("NV")[0].startswith("A medium round")
    assert bank.task == "derm"


def test_sample_is_seeded_and_independent_of_file_order(bank_dir, tmp_path):
    bank = DescriptionBank(bank_dir)
    draws = [bank.sample("MEL", seed=s)["id"] for s in range(12)]
    assert draws == [DescriptionBank(bank_dir).sample("MEL", seed=s)["id"] for s in range(12)]
    assert len(set(draws)) > 3  # different seeds reach different descriptions
    # the same bank with its lines appended in another order gives the same draws
    reversed_dir = write_bank(tmp_path / "reversed", list(reversed(_records())))
    assert draws == [DescriptionBank(reversed_dir).sample("MEL", seed=s)["id"] for s in range(12)]


@pytest.mark.parametrize(
    "category,message",
    [
        ("FOO", r"unknown category 'FOO'; known categories: \['MEL', 'NV'\]"),
        ("BCC", r"category 'BCC' has no validated descriptions \(expected in .*BCC\.jsonl\)"),  # an empty file
        ("VASC", r"category 'VASC' has no validated descriptions"),  # a class of the task that was never described
    ],
)
def test_sample_errors_name_the_category(bank_dir, category, message):
    with pytest.raises(ValueError, match=message):
        DescriptionBank(bank_dir).sample(category, seed=0)


def test_bank_path_errors(tmp_path):
    with pytest.raises(ValueError, match="no such folder"):
        DescriptionBank(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "rejected.jsonl").write_text("")
    with pytest.raises(ValueError, match="no category file"):
        DescriptionBank(tmp_path / "empty")


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda r: r.pop("description"), r"lacks \['description'\]"),
        (lambda r: r.update(description="  "), "empty description"),
        (lambda r: r.update(category="NV"), "whose file is NV.jsonl"),
    ],
)
def test_bad_records_are_refused(tmp_path, damage, message):
    write_bank(tmp_path, _records())
    path = tmp_path / "MEL.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    damage(lines[3])
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(ValueError, match=message):
        DescriptionBank(tmp_path)


def test_truncated_last_line_is_skipped_with_a_warning(bank_dir):
    path = bank_dir / "NV.jsonl"
    path.write_text(path.read_text() + '{"id": "ISIC_0000050", "categ')
    with pytest.warns(UserWarning, match="incomplete"):
        bank = DescriptionBank(bank_dir)
    assert len(bank.records("NV")) == 3
    path.write_text('{"id": "ISIC_0000050", "categ\n' + path.read_text())
    with pytest.raises(ValueError, match="line 1"):
        DescriptionBank(bank_dir)


def test_stats_counts_coverage_and_rejections(bank_dir, tmp_path):
    stats = DescriptionBank(bank_dir).stats()
    assert stats["counts"] == {"MEL": 10, "NV": 3} and stats["total"] == 13
    assert stats["rejected"] == 1 and stats["rejection_rate"] == pytest.approx(1 / 14)
    assert stats["rejection_reasons"] == {"contradiction": 1, "out_of_vocabulary": 1}
    assert stats["attributes"]["shape"] == {"irregular": 5, "oval": 5, "round": 3}
    assert stats["attributes_by_category"]["NV"]["size"] == {"medium": 3}
    assert stats["coverage"]["colour"] == {"seen": 5, "vocabulary": 5, "share": 1.0, "unseen": []}
    assert stats["coverage"]["size"]["share"] == pytest.approx(2 / 3) and stats["coverage"]["size"]["unseen"] == [
        "large"
    ]
    assert stats["coverage"]["position"]["unseen"] == ["upper_left", "upper_right", "lower_left", "lower_right"]
    # without bank.json: no vocabulary, the rejection count comes from rejected.jsonl
    bare = write_bank(tmp_path / "bare", _records(), rejected=[{"id": "x", "reasons": ["parse: no JSON"]}], task=None)
    stats = DescriptionBank(bare).stats()
    assert stats["task"] is None and stats["rejected"] == 1 and stats["rejection_rate"] == pytest.approx(1 / 14)
    assert stats["coverage"]["shape"] == {"seen": 3, "vocabulary": None, "share": None, "unseen": None}


def test_stats_plot_and_cli(bank_dir, tmp_path, capsys):
    from medgen_monai.cli import bank_stats, main

    png = DescriptionBank(bank_dir).write_stats_plot(tmp_path / "plots" / "bank.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stats = json.loads(bank_stats(str(bank_dir), plot=str(tmp_path / "cli.png")))
    assert stats["counts"] == {"MEL": 10, "NV": 3} and (tmp_path / "cli.png").is_file()
    main(["bank-stats", "--bank", str(bank_dir)])
    assert json.loads(capsys.readouterr().out)["rejected"] == 1
    with pytest.raises(SystemExit):
        main(["bank-stats", "--bank", str(tmp_path / "missing")])
    assert "no such folder" in capsys.readouterr().err


def _datalist() -> list[dict]:
    records = [{"id": f"ISIC_{i:07d}", "label": 0, "label_name": "MEL", "image": f"/data/{i}.jpg"} for i in range(10)]
    records += [
        {
            "id": f"ISIC_{i:07d}",
            "label": 1,
            "label_name": "NV",
            "image": f"/data/{i}.jpg",
            "attributes": {"size": "large"},
        }
        for i in range(10, 15)
    ]
    return records


def test_attach_descriptions_joins_by_id(bank_dir):
    with pytest.warns(UserWarning, match="2 of 15 datalist records have no validated description") as caught:
        joined = attach_descriptions(_datalist(), str(bank_dir))
    assert len(caught) == 1
    assert [r["id"] for r in joined] == [f"ISIC_{i:07d}" for i in range(13)]
    first = joined[0]
    assert first["category"] == "MEL" and first["description"].startswith("A small oval light brown lesion")
    assert first["attributes"] == first["description_attributes"]  # no ground truth: the description's attributes
    assert joined[-1]["attributes"] == {"size": "large"}  # ground truth kept
    assert joined[-1]["description_attributes"]["size"] == "medium"


def test_attach_descriptions_errors(bank_dir):
    with pytest.raises(ValueError, match="no datalist record .* has a validated description"):
        attach_descriptions([{"id": "other"}], bank_dir)
    with pytest.raises(ValueError, match="is 'NV' but bank .* describes it as 'MEL'"):
        attach_descriptions([{"id": "ISIC_0000001", "label": 1}], bank_dir)
    with pytest.raises(ValueError, match="no 'id'"):
        attach_descriptions([{"label": 1}], bank_dir)


@pytest.mark.parametrize(
    "combinations,removed_ids",
    [
        ([], []),
        ([{"colour": "red"}], ["r3", "r8"]),
        ([{"colour": "red", "shape": "irregular"}], ["r3"]),
        ([{"colour": ["red", "black"], "shape": "oval"}], ["r2", "r8"]),
        ([{"colour": "red", "shape": "oval"}, {"colour": "black"}], ["r2", "r7", "r8"]),
    ],
)
def test_exclude_combinations(combinations, removed_ids):
    colours = ["light_brown", "dark_brown", "black", "red", "blue_grey"]
    records = [
        {"id": f"r{i}", "attributes": {"colour": colours[i % 5], "shape": "irregular" if i % 2 else "oval"}}
        for i in range(10)
    ]
    kept, removed = exclude_combinations(records, combinations)
    assert [r["id"] for r in removed] == removed_ids
    assert [r["id"] for r in kept] == [r["id"] for r in records if r["id"] not in removed_ids]


def test_exclude_combinations_errors():
    records = [{"id": "a", "attributes": {"colour": "red"}}]
    with pytest.raises(ValueError, match=r"attribute\(s\) \['color'\] that no record has"):
        exclude_combinations(records, [{"color": "red"}])
    with pytest.raises(ValueError, match="non-empty mapping"):
        exclude_combinations(records, [{}])
    with pytest.raises(ValueError, match="record 'b': no 'attributes'"):
        exclude_combinations(records + [{"id": "b"}], [{"colour": "red"}])


def test_cxr_bank_categories_and_joined_class_check(tmp_path):
    from medgen_monai.describe.tasks import cxr_category

    category = cxr_category(["Cardiomegaly", "Pleural Effusion"])  # the task's rule for a multi-label study
    records = [
        {
            "id": "s1",
            "image": "f.jpg",
            "category": category,
            "description": "Enlarged heart, effusion.",
            "attributes": {"heart_size": "enlarged"},
            "task": "cxr",
            "backend": "oracle",
            "model": "oracle",
        },
        {
            "id": "s2",
            "image": "g.jpg",
            "category": "No Finding",
            "description": "Clear lungs, normal heart.",
            "attributes": {"heart_size": "normal"},
            "task": "cxr",
            "backend": "oracle",
            "model": "oracle",
        },
    ]
    bank = DescriptionBank(write_bank(tmp_path, records, task="cxr", vocabulary={"heart_size": ["normal", "enlarged"]}))
    assert (tmp_path / "No_Finding.jsonl").is_file()  # a category with a space is slugged, the record keeps the name
    assert bank.sample("No Finding", seed=3)["id"] == "s2"
    with pytest.raises(ValueError, match="'Pneumothorax' has no validated descriptions"):
        bank.sample("Pneumothorax", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        joined = attach_descriptions(
            [
                {"id": "s1", "label_name": ["Pleural Effusion", "Cardiomegaly"]},
                {"id": "s2", "label": [1, 0, 0, 0, 0, 0]},
            ],
            bank,
        )
    assert [r["category"] for r in joined] == [category, "No Finding"]
    with pytest.raises(ValueError, match="'s2' is 'Pneumothorax' but bank"):
        attach_descriptions([{"id": "s2", "label_name": ["Pneumothorax"]}], bank)
