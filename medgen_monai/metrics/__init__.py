"""Metrics on phantom and real images: audit networks, attribute accuracy, FID, diversity.

* :mod:`.audit`: per-unit audit CNNs trained on phantoms (``medgen-monai train-audit``).
* :func:`attribute_accuracy`: requested attributes read back by the audit network.
* :func:`fid`: MONAI ``FIDMetric`` on audit features or any local feature extractor.
* :func:`diversity`: ``1 - mean pairwise MS-SSIM`` within each class (MONAI ``MultiScaleSSIMMetric``).
* :mod:`.reference`: fair references (:func:`stratified_reference`), the FID floor (:func:`fid_floor`) and
  :func:`kid` with a 95% interval, on precomputed features.
"""

from __future__ import annotations

from .attributes import attribute_accuracy
from .audit import AuditNet, AuditSpec, audit_units, load_audit, train_audit
from .diversity import diversity
from .fid import FeatureExtractor, feature_extractor, fid, fid_from_features
from .preprocess import preprocess_images
from .reference import StratifiedReference, fid_floor, kid, request_sources, stratified_reference

__all__ = [
    "AuditNet",
    "AuditSpec",
    "FeatureExtractor",
    "StratifiedReference",
    "attribute_accuracy",
    "audit_units",
    "diversity",
    "feature_extractor",
    "fid",
    "fid_floor",
    "fid_from_features",
    "kid",
    "load_audit",
    "preprocess_images",
    "request_sources",
    "stratified_reference",
    "train_audit",
]
