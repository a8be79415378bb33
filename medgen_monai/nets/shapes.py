"""The latent shape of a latent diffusion bundle, checked against what its networks can divide."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["latent_shape"]


def latent_shape(
    image_size: Sequence[int], latent_channels: int, autoencoder_channels: Sequence[int], unet_channels: Sequence[int]
) -> list[int]:
    """``[latent_channels, *spatial]`` for images of ``image_size``, refusing sizes the networks cannot divide.

    MONAI's ``AutoencoderKL`` halves each side once per level after the first (``len(autoencoder_channels) - 1``
    times) and the diffusion U-Net halves the latent as often again (``len(unet_channels) - 1``); a side that
    does not divide evenly fails deep inside a forward pass ("Sizes of tensors must match"), so it is refused
    here, when the config is built.

    Raises:
        ValueError: naming ``image_size``, the divisor and the nearest sizes that work.
    """
    size = [int(s) for s in image_size]
    if not size or min(size) < 1:
        raise ValueError(f"image_size must be positive integers, got {list(image_size)}")
    down_ae, down_unet = len(autoencoder_channels) - 1, len(unet_channels) - 1
    divisor = 2 ** (down_ae + down_unet)
    bad = [s for s in size if s % divisor]
    if bad:
        nearest = sorted(
            {max(divisor, s // divisor * divisor) for s in bad} | {(s // divisor + 1) * divisor for s in bad}
        )
        raise ValueError(
            f"image_size {size}: every side must be a multiple of {divisor} (the autoencoder halves it "
            f"{down_ae} times, the diffusion U-Net {down_unet} more); {bad} is not; try {nearest}"
        )
    return [int(latent_channels)] + [s // 2**down_ae for s in size]
