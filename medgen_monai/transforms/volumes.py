"""Volume transforms: volumes read the project's one way, and the voxel spacing as a conditioning input.

:class:`LoadVolumed` is :func:`medgen_monai.io.volumes.load_volume` (NIfTI, MetaImage, DICOM series, into RAS) as
a dictionary transform, so training reads volumes exactly as evaluation and the audit networks do.
CCELLA (as MAISI) conditions its U-Net on the voxel spacing in millimetres. MONAI keeps the spacing in the
image's affine (``MetaTensor.pixdim``) and updates it in every spatial transform (``Orientationd``,
``Resized``, ``Spacingd``), so reading it after those transforms gives the spacing of the array the network sees.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["LoadVolumed", "VoxelSpacingd"]


class LoadVolumed(MapTransform):
    """Replace a volume's path by its channel-first ``(1, X, Y, Z)`` float32 ``MetaTensor`` in RAS order, with its
    voxel -> RAS affine (what later spatial transforms update and :class:`VoxelSpacingd` reads).

    Raises:
        medgen_monai.errors.InputError: (on call) naming the file and what was expected (see ``load_volume``).
    """

    def __init__(self, keys: KeysCollection = "image", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from ..io.volumes import load_volume

        d = dict(data)
        for key in self.key_iterator(d):
            array, affine = load_volume(d[key])
            d[key] = MetaTensor(torch.from_numpy(array)[None], affine=torch.as_tensor(affine))
        return d


class VoxelSpacingd(MapTransform):
    """Write an image's voxel spacing ``(spatial_dims,)`` float32 (mm) under ``spacing_key``.

    Args:
        keys: the image (a channel-first ``MetaTensor``, as ``LoadImaged`` + ``EnsureChannelFirstd`` give it).
        spacing_key: output name.
        allow_missing_keys: skip items without the key.

    Raises:
        ValueError: (on call) the image carries no affine (a plain array or tensor), naming the item.
    """

    def __init__(
        self, keys: KeysCollection = "image", spacing_key: str = "spacing", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ValueError(f"VoxelSpacingd reads one image, got keys {list(self.keys)}")
        self.spacing_key = str(spacing_key)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            if not isinstance(image, MetaTensor):
                raise ValueError(
                    f"item {d.get('id')!r}: {key!r} has no affine to read a spacing from (load it with "
                    f"LoadImaged, which keeps the affine), got {type(image).__name__}"
                )
            spatial_dims = image.ndim - 1  # channel first
            d[self.spacing_key] = torch.as_tensor(image.pixdim[:spatial_dims], dtype=torch.float32).clone()
        return d
