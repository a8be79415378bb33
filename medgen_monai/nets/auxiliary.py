"""The one contract between a network with training-only loss terms and the trainer that optimises them.

VAP-Diffusion's prototype loss, CCELLA's report-class loss and MedCoDi-M's environment alignment are computed inside
the network's forward (they need its intermediate activations) but are not its output. Such a network implements
:class:`AuxiliaryLossNetwork`; the latent diffusion trainer takes the terms after each forward with
:meth:`~AuxiliaryLossNetwork.pop_auxiliary_losses` and adds them, weighed, to the noise loss.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["AuxiliaryLossNetwork", "AuxiliaryLosses"]


@runtime_checkable
class AuxiliaryLossNetwork(Protocol):
    """A network whose forward, in training mode, also computes loss terms.

    After each forward :attr:`auxiliary_losses` holds that forward's terms, name -> scalar tensor (empty in eval
    mode). :meth:`pop_auxiliary_losses` hands them over and clears them, so that no autograd graph outlives the
    optimiser step and the network stays deep-copyable (the trainer's EMA copy).
    """

    auxiliary_losses: dict[str, torch.Tensor]

    def pop_auxiliary_losses(self) -> dict[str, torch.Tensor]: ...


class AuxiliaryLosses:
    """:class:`AuxiliaryLossNetwork` for ``nn.Module`` subclasses: the forward assigns :attr:`auxiliary_losses`."""

    auxiliary_losses: dict[str, torch.Tensor]

    def pop_auxiliary_losses(self) -> dict[str, torch.Tensor]:
        """The terms of the last forward; they are cleared."""
        losses = dict(getattr(self, "auxiliary_losses", {}))
        self.auxiliary_losses = {}
        return losses
