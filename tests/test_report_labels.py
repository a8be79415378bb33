"""The report labeller reads every finding of the cxr phantom's reports back (including lower-cased, re-flowed text
as an uncased decoder writes it), and its agreement score fails on reports of other studies and on empty ones."""

from __future__ import annotations

import random

import pytest

from medgen_monai.metrics.report_labels import attribute_agreement, cxr_report_attributes, cxr_report_labels, label_f1
from medgen_monai.phantoms import get_phantom
from medgen_monai.transforms import tidy_report


@pytest.fixture(scope="module")
def studies():
    samples = get_phantom("cxr").generate_many(120, seed=3, size=16)  # the text does not depend on the size
    return [(s.text, s.attributes, s.label) for s in samples]


def test_reads_every_attribute_of_the_phantom_reports(studies):
    truth = [a for _, a, _ in studies]
    for text_of in (lambda t: t, lambda t: tidy_report(t.lower().replace("\n", " "))):
        agreement = attribute_agreement([cxr_report_attributes(text_of(t)) for t, _, _ in studies], truth)
        assert min(agreement.values()) == 1.0, agreement
    scores = label_f1([cxr_report_labels(t) for t, _, _ in studies], [labels for _, _, labels in studies])
    assert scores["micro_f1"] == 1.0 and scores["exact_match"] == 1.0


def test_agreement_fails_on_other_studies_reports_and_on_empty_reports(studies):
    truth = [labels for _, _, labels in studies]
    shuffled = [t for t, _, _ in studies]
    random.Random(0).shuffle(shuffled)
    assert label_f1([cxr_report_labels(t) for t in shuffled], truth)["micro_f1"] < 0.5
    assert label_f1([cxr_report_labels("") for _ in truth], truth)["micro_f1"] == 0.0
    assert cxr_report_attributes("No pneumothorax. The lungs are clear.")["pneumothorax"] == "none"
    assert (
        cxr_report_attributes("Small right-sided pneumothorax is absent... right apical pneumothorax.")["pneumothorax"]
        == "right"
    )
    with pytest.raises(ValueError, match="same, non-zero length"):
        label_f1([("No Finding",)], [])
    with pytest.raises(ValueError, match="report must be text"):
        cxr_report_attributes(None)
