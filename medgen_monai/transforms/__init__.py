"""MONAI dictionary transforms that the bundle configs use.

- :class:`RetrieveDescriptiond`: draw a description of the item's category from a description bank (seeded);
- :class:`EncodeTextd`: encode text fields into token states and pooled vectors (cached);
- :class:`LoadImageChannelsd`: read 2D image files into the bundle's channels by one documented rule.
"""

from __future__ import annotations

from .description import EncodeTextd, RetrieveDescriptiond
from .images import LoadImageChannelsd, read_image_channels

__all__ = ["EncodeTextd", "LoadImageChannelsd", "RetrieveDescriptiond", "read_image_channels"]
