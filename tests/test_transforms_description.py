"""RetrieveDescriptiond (seeded retrieval from a bank) and EncodeTextd (cached text encoding) as MONAI transforms."""

from __future__ import annotations

import pytest
import torch
from bank_helpers import derm_record, write_bank
from monai.data import CacheDataset, DataLoader
from monai.transforms import Compose

from medgen_monai.describe.bank import DescriptionBank
from medgen_monai.text import TextEncoder
from medgen_monai.transforms import EncodeTextd, RetrieveDescriptiond

COLOURS = ["light_brown", "dark_brown", "black", "red", "blue_grey"]


@pytest.fixture
def bank(tmp_path) -> DescriptionBank:
    records = [
        derm_record(f"ISIC_{i:07d}", "MEL", colour=COLOURS[i % 5], size=["small", "large"][i % 2]) for i in range(8)
    ]
    records.append(derm_record("ISIC_0000100", "NV"))
    return DescriptionBank(write_bank(tmp_path / "bank", records, empty_categories=["BCC"]))


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder(max_length=16, batch_size=8)


def test_retrieval_is_reproducible_by_item_seed(bank):
    first = RetrieveDescriptiond(bank, seed=1)
    second = RetrieveDescriptiond(str(bank.path), seed=2)  # another transform state: the item seed decides
    drawn = [first({"id": i, "category": "MEL", "seed": s}) for i, s in enumerate(range(10))]
    assert drawn == [second({"id": i, "category": "MEL", "seed": s}) for i, s in enumerate(range(10))]
    assert len({d["description"] for d in drawn}) > 2
    by_id = {r["id"]: r["description"] for r in bank.records("MEL")}
    assert all(by_id[d["description_id"]] == d["description"] for d in drawn)
    assert drawn[3]["description_id"] == bank.sample("MEL", seed=3)["id"]


def test_retrieval_without_item_seed_follows_the_transform_state(bank):
    def draws(transform):
        return [transform({"category": "MEL"})["description_id"] for _ in range(8)]

    assert draws(RetrieveDescriptiond(bank, seed=7)) == draws(RetrieveDescriptiond(bank, seed=7))
    assert draws(RetrieveDescriptiond(bank, seed=7)) != draws(RetrieveDescriptiond(bank, seed=8))
    reseeded = RetrieveDescriptiond(bank, seed=0).set_random_state(seed=7)
    assert draws(reseeded) == draws(RetrieveDescriptiond(bank, seed=7))
    # a None seed falls back to the transform's state too
    assert (
        RetrieveDescriptiond(bank, seed=7)({"category": "MEL", "seed": None})["description_id"]
        == draws(RetrieveDescriptiond(bank, seed=7))[0]
    )


def test_explicit_description_overrides_and_never_reads_the_bank(tmp_path):
    transform = RetrieveDescriptiond(str(tmp_path / "no_bank_here"))
    out = transform({"category": "MEL", "seed": 0, "description": "A large black lesion."})
    assert out["description"] == "A large black lesion." and "description_id" not in out
    with pytest.raises(ValueError, match="no such folder"):
        transform({"category": "MEL", "seed": 0, "description": "  "})  # blank: drawn from the bank


@pytest.mark.parametrize(
    "item,message",
    [
        ({"category": "FOO", "seed": 0}, r"unknown category 'FOO'; known categories: \['MEL', 'NV'\]"),
        ({"category": "BCC", "seed": 0}, "category 'BCC' has no validated descriptions"),
        ({"id": "r1", "seed": 0}, "item 'r1': no 'category'"),
        ({"category": "MEL", "description": 3}, "'description' must be a string"),
    ],
)
def test_retrieval_errors(bank, item, message):
    with pytest.raises(ValueError, match=message):
        RetrieveDescriptiond(bank)(item)


def test_encode_text_in_a_cache_dataset(bank, encoder):
    items = [{"id": r["id"], "description": r["description"]} for r in bank.records("MEL")]
    items += [dict(items[0], id="repeat"), {"id": "null", "description": ""}]
    before = encoder.encoded
    transform = Compose([EncodeTextd(keys="description", encoder=encoder, mask_key="context_mask")])
    dataset = CacheDataset(items, transform=transform, progress=False)
    assert encoder.encoded - before == 9  # 8 distinct descriptions + "": the repeat is not encoded again
    batch = next(iter(DataLoader(dataset, batch_size=len(items))))
    assert batch["context"].shape == (10, 16, 384) and batch["context"].dtype == torch.float32
    assert batch["text_pooled"].shape == (10, 384) and batch["context_mask"].shape == (10, 16)
    assert torch.equal(batch["context"][0], batch["context"][8])
    assert torch.equal(batch["context"][9], encoder.encode([""]).tokens[0])
    list(DataLoader(dataset, batch_size=4))  # a second epoch reads the cache
    assert encoder.encoded - before == 9


def test_retrieve_then_encode_requests(bank, encoder):
    pipeline = Compose([RetrieveDescriptiond(bank), EncodeTextd(encoder=encoder, pooled_key=None)])
    requests = [{"id": f"MEL_{s}", "category": "MEL", "seed": s} for s in range(3)]
    requests.append({"id": "explicit", "category": "NV", "seed": 0, "description": "A red round lesion."})
    out = [pipeline(r) for r in requests]
    assert torch.stack([o["context"] for o in out]).shape == (4, 16, 384)
    assert "text_pooled" not in out[0] and out[3]["description"] == "A red round lesion."
    assert torch.equal(out[0]["context"], encoder.encode([bank.sample("MEL", seed=0)["description"]]).tokens[0])


def test_encode_text_errors(encoder):
    with pytest.raises(ValueError, match="encoder must be a TextEncoder"):
        EncodeTextd(keys="description")
    with pytest.raises(ValueError, match="one output name per key"):
        EncodeTextd(keys=["a", "b"], encoder=encoder)
    with pytest.raises(ValueError, match="tokens_key: 3 name"):
        EncodeTextd(keys=["a", "b"], encoder=encoder, tokens_key=["x", "y", "z"], pooled_key=None)
    two = EncodeTextd(
        keys=["a", "b"], encoder=encoder, tokens_key=["ta", "tb"], pooled_key=None, allow_missing_keys=True
    )
    out = two({"a": "red lesion"})
    assert out["ta"].shape == (16, 384) and "tb" not in out
    with pytest.raises(ValueError, match="'description' must be a string to encode, got NoneType"):
        EncodeTextd(encoder=encoder)({"id": "x", "description": None})
    with pytest.raises(KeyError):
        EncodeTextd(encoder=encoder)({"id": "x"})
