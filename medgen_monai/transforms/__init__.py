"""MONAI dictionary transforms that the bundle configs use.

- :class:`RetrieveDescriptiond`: draw a description of the item's category from a description bank (seeded);
- :class:`EncodeTextd`: encode text fields into token states and pooled vectors (cached);
- :class:`LoadImageChannelsd`: read 2D image files into the bundle's channels by one documented rule;
- :class:`LoadVolumed`: read volumes into RAS (the project's one volume loader);
- :class:`VoxelSpacingd`: a volume's voxel spacing (mm) as a conditioning input;
- :class:`TokenizeReportd`, :class:`AlignedEmbeddingsd`, :class:`MultiPromptConditiond`, :class:`PackStreamsd`:
  MedCoDi-M's report tokens, aligned embeddings, multi-prompt conditions and packed stream inputs.
"""

from __future__ import annotations

from .description import EncodeTextd, RetrieveDescriptiond
from .images import LoadImageChannelsd, read_image_channels
from .streams import (
    AlignedEmbeddingsd,
    DecodeReportd,
    MultiPromptConditiond,
    PackStreamsd,
    TokenizeReportd,
    tidy_report,
)
from .volumes import LoadVolumed, VoxelSpacingd

__all__ = [
    "AlignedEmbeddingsd",
    "DecodeReportd",
    "MultiPromptConditiond",
    "PackStreamsd",
    "TokenizeReportd",
    "EncodeTextd",
    "LoadImageChannelsd",
    "LoadVolumed",
    "RetrieveDescriptiond",
    "VoxelSpacingd",
    "read_image_channels",
    "tidy_report",
]
