"""Metrics on phantom and real images: audit networks, attribute accuracy, FID, diversity.

* :mod:`.audit`: per-unit audit CNNs trained on phantoms (``medgen-monai train-audit``).
* :func:`attribute_accuracy`: requested attributes read back by the audit network.
* :func:`fid`: MONAI ``FIDMetric`` on audit features or any local feature extractor.
* :func:`diversity`: ``1 - mean pairwise MS-SSIM`` within each class (MONAI ``MultiScaleSSIMMetric``).
"""

from __future__ import annotations

from .attributes import attribute_accuracy
from .audit import AuditNet, AuditSpec, audit_units, load_audit, train_audit
from .diversity import diversity
from .fid import FeatureExtractor, feature_extractor, fid
from .preprocess import preprocess_images

__all__ = [
    "AuditNet",
    "AuditSpec",
    "FeatureExtractor",
    "attribute_accuracy",
    "audit_units",
    "diversity",
    "feature_extractor",
    "fid",
    "load_audit",
    "preprocess_images",
    "train_audit",
]
