"""MONAI dictionary transforms that the bundle configs use.

- :class:`RetrieveDescriptiond`: draw a description of the item's category from a description bank (seeded);
- :class:`EncodeTextd`: encode text fields into token states and pooled vectors (cached).
"""

from __future__ import annotations

from .description import EncodeTextd, RetrieveDescriptiond

__all__ = ["RetrieveDescriptiond", "EncodeTextd"]
