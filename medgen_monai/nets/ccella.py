"""CCELLA's diffusion U-Net: report tokens through the timestep-aware connector, the class predicted from the
report and the voxel spacing joined to the timestep embedding (Grabke et al. 2025, arXiv 2506.10230).

:class:`CCELLAUNet` is :class:`~medgen_monai.nets.ConditionedDiffusionUNet` (MONAI's U-Net, not a fork) with a
:class:`~medgen_monai.nets.TimestepAwareConnector` in front of its cross-attention. Per forward:

* ``tokens, logits = connector(report_tokens, timesteps)``: the cross-attention context;
* the class vector (``class_path``): ``"predicted"`` (CCELLA) ``softmax(logits) x 100``; ``"true"`` (the
  paper's DECOUPLED / RADMAISI ablations) the one-hot true class ``x 100``; ``"none"`` (ELLA, MAISI) nothing;
  through a two-layer MLP;
* the spacing vector: ``spacing_mm x 100`` through a two-layer MLP;
* both joined as the U-Net's extra conditioning vector (projected and added to the timestep embedding; the paper
  concatenates, which would widen MONAI's embedding: the projection is the same information, zero-initialised).

In training mode, with ``class_path="predicted"`` and ``report_class`` given, :attr:`auxiliary_losses` holds
``{"class": focal loss}`` over the samples whose report is not empty (``report_class >= 0``; MONAI's
``FocalLoss``, gamma 2, alpha 0.75 as the authors'); the trainer adds it, weighted (``1e-4`` in the paper).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .auxiliary import AuxiliaryLosses
from .conditioned_unet import ConditionedDiffusionUNet
from .connector import TimestepAwareConnector

__all__ = ["CLASS_PATHS", "CCELLAUNet"]

CLASS_PATHS: tuple[str, ...] = ("predicted", "true", "none")


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


class CCELLAUNet(AuxiliaryLosses, ConditionedDiffusionUNet):
    """A 2D/3D diffusion U-Net conditioned on a report (connector), a class and the voxel spacing.

    Args:
        connector: the :class:`TimestepAwareConnector` (its ``output_dim`` is the U-Net's ``cross_attention_dim``);
            ``None``: no text (the paper's MAISI / RADMAISI ablations).
        class_path: one of :data:`CLASS_PATHS`; ``"predicted"`` needs a connector with class heads.
        use_spacing: join the voxel spacing (``spacing_dims`` numbers, millimetres).
        spacing_dims: the spacing's length (3 for volumes).
        condition_dim: width of the class and the spacing embeddings.
        focal_alpha, focal_gamma: the class loss's focal parameters.
        kwargs: MONAI ``DiffusionModelUNet`` arguments; ``with_conditioning`` and ``cross_attention_dim`` are set
            from the connector.

    Forward:
        ``x`` ``(B, C, *spatial)``, ``timesteps`` ``(B,)``, ``context`` ``(B, L, D_text)`` report token features,
        ``spacing`` ``(B, spacing_dims)``, ``report_class`` ``(B,)`` int (-1: empty report, unknown) ->
        ``(B, out_channels, *spatial)``. :attr:`last_class_probabilities` holds the predicted class
        probabilities ``(B, num_classes)`` of the last call (the sidecar records them).
    """

    def __init__(
        self,
        connector: TimestepAwareConnector | None = None,
        class_path: str = "predicted",
        use_spacing: bool = True,
        spacing_dims: int = 3,
        condition_dim: int = 32,
        focal_alpha: float = 0.75,
        focal_gamma: float = 2.0,
        **kwargs: Any,
    ) -> None:
        if class_path not in CLASS_PATHS:
            raise ValueError(f"class_path must be one of {CLASS_PATHS}, got {class_path!r}")
        if class_path == "predicted" and (connector is None or connector.class_heads == "none"):
            raise ValueError("class_path 'predicted' needs a connector with class heads (class_heads != 'none')")
        if int(condition_dim) < 1 or int(spacing_dims) < 1:
            raise ValueError(f"condition_dim and spacing_dims must be >= 1, got {condition_dim}, {spacing_dims}")
        for key in ("with_conditioning", "cross_attention_dim", "num_classes", "extra_embedding_dim"):
            if key in kwargs:
                raise ValueError(f"{key} is set by CCELLAUNet (from the connector and the class path); do not give it")
        num_classes = connector.num_classes if connector is not None else 2
        parts = (class_path != "none") + bool(use_spacing)
        super().__init__(
            num_classes=1,
            extra_embedding_dim=parts * int(condition_dim) if parts else None,
            with_conditioning=connector is not None,
            cross_attention_dim=None if connector is None else connector.out[0].out_features,
            **kwargs,
        )
        self.connector = connector
        self.class_path = class_path
        self.report_classes = int(num_classes)
        self.class_mlp = _mlp(num_classes, condition_dim) if class_path != "none" else None
        self.spacing_mlp = _mlp(spacing_dims, condition_dim) if use_spacing else None
        self.spacing_dims = int(spacing_dims)
        self.focal_alpha, self.focal_gamma = float(focal_alpha), float(focal_gamma)
        self.auxiliary_losses: dict[str, torch.Tensor] = {}
        self.last_class_probabilities: torch.Tensor | None = None

    def class_loss(self, logits: torch.Tensor, report_class: torch.Tensor) -> torch.Tensor | None:
        """The focal loss of the class logits ``(B, K)`` over the samples with a known class (``>= 0``)."""
        from monai.losses import FocalLoss

        known = report_class >= 0
        if not bool(known.any()):
            return None
        target = F.one_hot(report_class[known].long(), self.report_classes).to(logits.dtype)
        focal = FocalLoss(gamma=self.focal_gamma, alpha=self.focal_alpha, use_softmax=True, to_onehot_y=False)
        return focal(logits[known], target)

    @torch.no_grad()
    def predict_class(self, context: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        """The class probabilities ``(B, K)`` the connector's heads read from report token features ``(B, L, D)``.

        The heads see timestep-modulated latents; ``timesteps`` ``(B,)`` defaults to 0 (the end of sampling, where
        the class vector shapes the finished volume), the reading a sidecar and the class-from-report benchmark use.
        """
        if self.connector is None or self.connector.class_heads == "none":
            raise ValueError("this U-Net has no class heads to predict a class from the report")
        if timesteps is None:
            timesteps = torch.zeros(context.shape[0], dtype=torch.long, device=context.device)
        _, logits = self.connector(context, timesteps)
        return logits.softmax(dim=1)

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,  # type: ignore[override]
        spacing: torch.Tensor | None = None,
        report_class: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        tokens, logits = (None, None)
        if self.connector is not None:
            if context is None:
                raise ValueError("CCELLAUNet with a connector needs context: the report's token features (B, L, D)")
            tokens, logits = self.connector(context, timesteps)
        parts = []
        self.last_class_probabilities = None
        if self.class_path == "predicted":
            probabilities = logits.softmax(dim=1)
            self.last_class_probabilities = probabilities.detach()
            parts.append(self.class_mlp(probabilities * 100))
        elif self.class_path == "true":
            if report_class is None:
                raise ValueError("class_path 'true' needs report_class (B,) (the DECOUPLED ablation)")
            one_hot = F.one_hot(report_class.clamp(min=0).long(), self.report_classes).to(x.dtype)
            one_hot = one_hot * (report_class >= 0).unsqueeze(1).to(x.dtype)  # an unknown class: no class vector
            parts.append(self.class_mlp(one_hot * 100))
        if self.spacing_mlp is not None:
            if spacing is None or spacing.shape != (x.shape[0], self.spacing_dims):
                raise ValueError(
                    f"spacing must be (B, {self.spacing_dims}) millimetres, got "
                    f"{None if spacing is None else tuple(spacing.shape)}"
                )
            parts.append(self.spacing_mlp(spacing.to(x.dtype) * 100))
        extra = torch.cat(parts, dim=1) if parts else None
        out = super().forward(x, timesteps, context=tokens, extra_embedding=extra, **kwargs)
        loss = None
        if self.training and self.class_path == "predicted" and report_class is not None:
            loss = self.class_loss(logits, report_class)
        self.auxiliary_losses = {"class": loss} if loss is not None else {}
        return out
