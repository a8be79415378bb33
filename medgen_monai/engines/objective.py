"""Training for networks that compute their own objective: text VAEs, contrastive encoders.

The diffusion and autoencoder trainers know their losses. Some stages' losses belong to the network instead
(MedCoDi-M's report VAE: token cross-entropy and KL; its aligned condition space: a CLIP loss over every pair of
modalities). Such a network implements :class:`TrainingObjective`; :class:`ObjectiveTrainer` feeds it batch
fields, weighs its terms (a weight may ramp up linearly, as a VAE's KL weight is annealed) and does the rest as
every trainer of the family does (checkpoints that resume exactly, EMA, TensorBoard, sample files, distributed
data parallel). A network that computes its own objective draws its own noise, so in a distributed run each rank
draws for its share from seeds of its own, and a term over the whole batch (a contrastive loss) is computed over each
rank's share: the averaged gradients are then close to, not equal to, those of one process with the whole batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn
from monai.inferers import Inferer, SimpleInferer

from ..io.atomic import atomic_write_text
from .distributed import rank_seed
from .trainer import GenerativeTrainer, IndexedBatches

__all__ = ["ObjectiveTrainer", "TrainingObjective"]


@runtime_checkable
class TrainingObjective(Protocol):
    """A network that computes its training terms from batch fields.

    ``training_losses(**fields, generator=...)`` returns named scalar terms (tensors); the trainer weighs the
    ones it has weights for and logs the others. ``training_samples(**fields)`` (optional) returns text shown
    in the trainer's sample files (e.g. reconstructions).
    """

    def training_losses(
        self, *, generator: torch.Generator | None = None, **fields: Any
    ) -> dict[str, torch.Tensor]: ...


class ObjectiveTrainer(GenerativeTrainer):
    """Trains a :class:`TrainingObjective` network.

    Args:
        network: the network (``training_losses``).
        optimizer: its optimizer.
        batches: batches of dicts.
        inputs: batch key -> keyword argument of ``training_losses`` (e.g. ``{"text": "texts"}``).
        loss_weights: term -> weight of the total loss; terms without a weight are logged, not optimised.
        ramp_iterations: term -> iterations over which its weight rises linearly from 0 (KL annealing).
        num_samples: batch items shown in sample files (``samples/iteration_<n>.txt``) when the network has
            ``training_samples``.
        inferer: how the sample files run the network (MONAI ``Inferer``: ``inferer(fields, network)`` with the
            batch's fields as one dict; the bundles' train ``inferer`` property); default ``SimpleInferer``.
        **kwargs: :class:`~medgen_monai.engines.GenerativeTrainer` arguments.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: IndexedBatches,
        inputs: Mapping[str, str],
        loss_weights: Mapping[str, float],
        ramp_iterations: Mapping[str, int] | None = None,
        num_samples: int = 4,
        inferer: Inferer | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(network, TrainingObjective):
            raise ValueError(
                f"{type(network).__name__} has no training_losses(...): ObjectiveTrainer trains networks "
                "that compute their own objective"
            )
        if not inputs:
            raise ValueError("inputs: map at least one batch key to a training_losses argument")
        if not loss_weights or any(float(w) < 0 for w in loss_weights.values()):
            raise ValueError(f"loss_weights: give at least one term, with weights >= 0; got {dict(loss_weights)}")
        ramp = dict(ramp_iterations or {})
        unknown = sorted(set(ramp) - set(loss_weights))
        if unknown or any(int(v) < 0 for v in ramp.values()):
            raise ValueError(f"ramp_iterations: terms {unknown} have no loss weight, or a ramp is negative: {ramp}")
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        super().__init__(network, optimizer, batches, **kwargs)
        self.inputs = dict(inputs)
        self.loss_weights = {str(k): float(v) for k, v in loss_weights.items()}
        self.ramp_iterations = {str(k): int(v) for k, v in ramp.items()}
        self.num_samples = int(num_samples)
        self.inferer = SimpleInferer() if inferer is None else inferer

    def _fields(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        missing = sorted(k for k in self.inputs if k not in batch)
        if missing:
            raise ValueError(f"batch has no {missing} (keys: {sorted(batch)})")
        fields = {}
        for key, name in self.inputs.items():
            value = batch[key]
            fields[name] = value.to(self.device) if isinstance(value, torch.Tensor) else value
        return fields

    def weight(self, term: str, iteration: int) -> float:
        """The weight of ``term`` at ``iteration`` (1-based), after its ramp."""
        ramp = self.ramp_iterations.get(term, 0)
        return self.loss_weights[term] * (1.0 if ramp == 0 else min(1.0, iteration / ramp))

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        # dropout inside the network draws from the global RNG: fork it from ours, so a resumed run is exact
        seed, generator = int(torch.randint(0, 2**62, (1,), generator=self.generator)), self.generator
        if self.world_size > 1:
            # the network draws for its own (this rank's) rows: give each rank its own seeds, derived from draws that
            # keep the trainer's generator in step across the ranks
            seed = rank_seed(seed, self.rank)
            generator = torch.Generator().manual_seed(
                rank_seed(int(torch.randint(0, 2**62, (1,), generator=self.generator)), self.rank)
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            terms = self.network.training_losses(**self._fields(batch), generator=generator)
        missing = sorted(set(self.loss_weights) - set(terms))
        if missing:
            raise ValueError(f"{type(self.network).__name__}.training_losses gave no {missing} (gave {sorted(terms)})")
        loss = sum(self.weight(k, self.state.iteration) * terms[k] for k in self.loss_weights)
        self.optimise(loss)
        return {**terms, "loss": loss}

    def write_samples(self, iteration: int) -> Path | None:
        """``samples/iteration_<n>.txt``: what the model's ``training_samples`` says about the run's first batch."""
        describe = getattr(self.model, "training_samples", None)
        if not callable(describe) or self.num_samples == 0:
            return None
        batch = self.preview_batch()
        fields = {k: v[: self.num_samples] for k, v in self._fields(batch).items()}
        was_training = self.model.training
        self.model.eval()
        try:
            text = self.inferer(fields, lambda f: describe(**f))
        finally:
            self.model.train(was_training)
        path = self.output_dir / "samples" / f"iteration_{iteration:07d}.txt"
        atomic_write_text(path, str(text) + "\n")
        return path
