"""The phantom contract (phantoms/base.py), the shared data helpers and atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medgen_monai.data import split_datalist, split_of
from medgen_monai.data.common import read_attributes, read_csv, write_attributes, write_csv
from medgen_monai.errors import DatasetError
from medgen_monai.io.atomic import atomic_path, atomic_write_text
from medgen_monai.phantoms import KINDS, Attribute, Phantom, get_phantom, sample_rng


class TinyPhantom(Phantom):
    name = "tiny"
    classes = ("a", "b")
    attributes = (
        Attribute("size", ("small", "large"), "disc radius"),
        Attribute("side", ("left", "right"), "where", views=("image",)),
    )
    views = ("image",)
    spatial_dims = 2
    channels = 1
    default_size = (16, 16)
    layout = "none"

    def draw(self, rng, label, fixed):
        label = label or self.classes[rng.integers(2)]
        attrs = {a.name: fixed.get(a.name, a.values[rng.integers(2)]) for a in self.attributes}
        return label, attrs

    def render(self, rng, label, attributes, size):
        yy, xx = np.mgrid[: size[0], : size[1]]
        cx = size[1] * (0.3 if attributes["side"] == "left" else 0.7)
        r = 2 if attributes["size"] == "small" else 5
        image = ((yy - size[0] / 2) ** 2 + (xx - cx) ** 2 < r * r).astype(np.uint8) * 200 + rng.integers(
            0, 20, size
        ).astype(np.uint8)
        return {"image": image}, {"lesion": image > 100}, {"patient_id": f"p{rng.integers(1e6)}"}

    def describe(self, rng, label, attributes, meta):
        return f"A {attributes['size']} disc on the {attributes['side']}."


def test_generate_is_a_function_of_seed_and_index():
    p = TinyPhantom()
    a, b = p.generate(3, seed=7), p.generate(3, seed=7)
    assert np.array_equal(a.images["image"], b.images["image"]) and a.attributes == b.attributes and a.text == b.text
    many = list(p.generate_many(5, seed=7))
    assert np.array_equal(many[3].images["image"], a.images["image"])
    assert not np.array_equal(p.generate(3, seed=8).images["image"], a.images["image"])


def test_overrides_are_honoured_and_validated():
    p = TinyPhantom()
    s = p.generate(0, label="b", attributes={"size": "large"})
    assert s.label == "b" and s.attributes["size"] == "large"
    assert p.generate(0, attributes={"size": "small"}).masks["lesion"].sum() < s.masks["lesion"].sum()
    with pytest.raises(ValueError, match="unknown value 'huge'.*'small', 'large'"):
        p.generate(0, attributes={"size": "huge"})
    with pytest.raises(ValueError, match="unknown attribute 'colour'"):
        p.generate(0, attributes={"colour": "red"})
    with pytest.raises(ValueError, match="unknown class 'c'"):
        p.generate(0, label="c")
    with pytest.raises(ValueError, match="size must be 2 integers >= 16"):
        p.generate(0, size=(8, 8))
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        sample_rng(-1, 0)


def test_attribute_rejects_bad_vocabulary():
    with pytest.raises(ValueError, match="at least two values"):
        Attribute("x", ("only",), "doc")
    with pytest.raises(ValueError, match="repeated values"):
        Attribute("x", ("a", "a"), "doc")
    assert Attribute("x", ("a", "b"), "doc", views=("frontal",)).visible_in("lateral") is False


def test_vocabulary_is_plain_json():
    vocab = TinyPhantom.vocabulary()
    assert json.loads(json.dumps(vocab))["attributes"]["size"]["values"] == ["small", "large"]


def test_registry():
    assert KINDS == ("derm", "colon", "cxr", "prostate")
    with pytest.raises(ValueError, match="unknown phantom kind 'xray'"):
        get_phantom("xray")


def test_splits_are_patient_level_stable_and_seeded():
    datalist = [{"patient_id": f"p{i // 3}", "id": i} for i in range(3000)]
    splits = split_datalist(datalist, seed=1)
    assert sum(len(v) for v in splits.values()) == 3000
    patients = {k: {r["patient_id"] for r in v} for k, v in splits.items()}
    assert not (patients["train"] & patients["val"]) and not (patients["train"] & patients["test"])
    assert 0.75 < len(splits["train"]) / 3000 < 0.85
    # adding patients never moves an existing one
    more = split_datalist(datalist + [{"patient_id": "new", "id": -1}], seed=1)
    assert [r["id"] for r in more["test"] if r["id"] != -1] == [r["id"] for r in splits["test"]]
    assert split_datalist(datalist, seed=2)["test"] != splits["test"]
    with pytest.raises(ValueError, match="sum to 1"):
        split_of("p", fractions={"train": 0.5})
    with pytest.raises(ValueError, match="no field 'patient_id'"):
        split_datalist([{"id": 1}])


def test_read_csv_names_file_and_missing_column(tmp_path):
    path = write_csv(tmp_path / "t.csv", ["image", "MEL"], [{"image": "x", "MEL": "1.0"}])
    assert read_csv(path, ["image"]) == [{"image": "x", "MEL": "1.0"}]
    with pytest.raises(DatasetError, match=r"t\.csv: NV: required column missing"):
        read_csv(path, ["image", "NV"])
    with pytest.raises(DatasetError, match=r"nope\.csv: csv: file not found"):
        read_csv(tmp_path / "nope.csv", ["image"])


def test_attribute_file_round_trip_and_corruption(tmp_path):
    assert read_attributes(tmp_path) == {}
    write_attributes(tmp_path, [{"id": "a", "attributes": {"size": "small"}}])
    assert read_attributes(tmp_path)["a"]["attributes"] == {"size": "small"}
    (tmp_path / "phantom_attributes.jsonl").write_text('{"id": "a", "attributes": {}}\n{broken\n')
    with pytest.raises(DatasetError, match="line 2"):
        read_attributes(tmp_path)


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    """mkstemp makes 0o600 files; outputs meant to be shared must get the usual umask-based mode."""
    import os

    umask = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "out.json", "{}")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644
