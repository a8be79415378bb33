"""The joint stage of MedCoDi-M: training the connectors that let streams generated together see each other.

:class:`JointStreamTrainer` is the project's :class:`~medgen_monai.engines.LatentDiffusionTrainer` on packed
latents (:class:`~medgen_monai.nets.StreamAutoencoder`, :class:`~medgen_monai.nets.JointDiffusion`) with three
differences that CoDi's joint stage needs:

* each iteration draws a *task* (which modalities condition, which are generated together) and the whole batch
  generates that task's outputs: the connectors learn from the situations they are used in;
* the stream denoisers are frozen; environment encoders and connectors train (the optimizer is given
  ``network.joint_parameters()``);
* the loss is each generated stream's mean denoising error, summed over streams (a report latent of 64 values
  weighs as much as a view of 1024), plus the network's environment alignment term.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..nets.aligned import combine_embeddings
from ..nets.streams import unpack
from .trainer import LatentDiffusionTrainer

__all__ = ["JointStreamTrainer"]


class JointStreamTrainer(LatentDiffusionTrainer):
    """Trains a :class:`~medgen_monai.nets.JointDiffusion`'s connectors on tasks drawn per iteration.

    Args:
        network: the :class:`~medgen_monai.nets.JointDiffusion` (its streams are frozen here).
        optimizer: over ``network.joint_parameters()``.
        batches: items with ``image_key`` (default ``"streams"``: the packed inputs of every stream, in
            ``autoencoder.outputs`` order, as :class:`~medgen_monai.transforms.PackStreamsd` makes them)
            and ``f"{m}_embedding"`` for every conditioning modality ``m``.
        scheduler: the streams' scheduler.
        autoencoder: the :class:`~medgen_monai.nets.StreamAutoencoder` over every stream.
        tasks: each ``{"inputs": [...], "outputs": [...]}``: the conditioning modalities (may be empty: the null
            condition) and two or more generated streams.
        condition_dropout: probability that a sample's condition is replaced by the null (zero) condition.
        **kwargs: :class:`LatentDiffusionTrainer` arguments (``scale_factor`` is 1: the stream autoencoder's
            latents are already normalised per stream).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Any,
        scheduler: Any,
        autoencoder: torch.nn.Module,
        tasks: Sequence[Mapping[str, Sequence[str]]],
        condition_dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        streams = list(getattr(autoencoder, "outputs", ()))
        if not streams or set(streams) != set(getattr(network, "streams", {})):
            raise ValueError(
                f"autoencoder outputs {streams} must be every stream of the network "
                f"{sorted(getattr(network, 'streams', {}))}"
            )
        checked = []
        for task in tasks:
            inputs, outputs = list(task.get("inputs", [])), list(task.get("outputs", []))
            if len(outputs) < 2 or set(outputs) - set(streams) or set(inputs) & set(outputs):
                raise ValueError(f"task {dict(task)}: outputs must be two or more of {streams}, none of them an input")
            checked.append((inputs, outputs))
        if not checked:
            raise ValueError("tasks: give at least one joint task")
        for key in ("scale_factor", "conditions", "null_conditions"):
            if key in kwargs:
                raise ValueError(f"{key} is set by JointStreamTrainer")
        kwargs.setdefault("image_key", "streams")
        network.streams.requires_grad_(False)
        network.connect = True  # the connectors being trained are used (untrained, they were switched off)
        super().__init__(
            network,
            optimizer,
            batches,
            scheduler,
            autoencoder=autoencoder,
            scale_factor=1.0,
            condition_dropout=condition_dropout,
            **kwargs,
        )
        self.tasks = checked
        self.stream_order = streams
        self._task = checked[0]

    def draw_task(self) -> tuple[list[str], list[str]]:
        """This iteration's task, from the trainer's generator (so a resumed run draws the same)."""
        self._task = self.tasks[int(torch.randint(len(self.tasks), (1,), generator=self.generator))]
        return self._task

    def _select(self, packed: torch.Tensor, outputs: Sequence[str]) -> torch.Tensor:
        shapes = [self.network.latent_shapes[s] for s in self.stream_order]
        parts = dict(zip(self.stream_order, unpack(packed, shapes)))
        return torch.cat([parts[s].reshape(packed.shape[0], -1) for s in outputs], dim=1)

    def _condition(
        self, batch: Mapping[str, Any], inputs: Sequence[str], size: int, dim: int, dropout: bool = True
    ) -> torch.Tensor:
        if inputs:
            missing = [m for m in inputs if f"{m}_embedding" not in batch]
            if missing:
                raise ValueError(f"batch has no embedding of {missing} (keys: {sorted(batch)})")
            condition = combine_embeddings(
                [torch.as_tensor(batch[f"{m}_embedding"]).float().reshape(size, -1) for m in inputs]
            )
        else:
            condition = torch.zeros(size, dim)
        if dropout:  # training only: the previews leave the trainer's generator (and so the run) untouched
            drop = (
                self.shard_rows(torch.rand(self.global_shape((size,)), generator=self.generator))
                < self.condition_dropout
            )
            condition = torch.where(drop[:, None], torch.zeros_like(condition), condition)
        return condition.unsqueeze(1).to(self.device)

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        inputs, outputs = self.draw_task()
        x0 = self._select(self.latents(batch, self.state.iteration - 1), outputs)
        noise = self.training_noise(x0)
        timesteps = self.training_timesteps(x0)
        noisy = self.schedule.add_noise(x0, noise, timesteps)
        self.network.set_outputs(outputs)
        condition = self._condition(batch, inputs, x0.shape[0], self.network.condition_dim)
        prediction = self.network(noisy, timesteps, context=condition)
        target = self.target(x0, noise, timesteps)
        shapes = [self.network.latent_shapes[s] for s in outputs]
        return self.optimise_with_auxiliary(
            {
                f"diffusion_{s}": F.mse_loss(p.float(), t.float())
                for s, p, t in zip(outputs, unpack(prediction, shapes), unpack(target, shapes))
            }
        )

    def latent_shape(self) -> tuple[int, ...]:
        return (self.network.packed_size,)

    def sample_images(self) -> torch.Tensor | None:
        """The first task's generated image streams for the first batch's conditions, one row per view."""
        if self.sampler is None:
            return None
        inputs, outputs = self.tasks[0]
        batch = self.preview_batch()
        count = min(8, len(batch[self.image_key]))
        self.network.set_outputs(outputs)
        condition = self._condition(
            batch, inputs, len(batch[self.image_key]), self.network.condition_dim, dropout=False
        )[:count]
        self.sampler.autoencoder = self.autoencoder.with_outputs(outputs)
        self.sampler.scale_factor, self.sampler.latent_shift = 1.0, 0.0
        decoded = self.sampler(
            self.model.set_outputs(outputs),
            (self.network.packed_size,),
            list(range(count)),
            condition={"context": condition},
            null_condition={"context": torch.zeros_like(condition)},
            device=self.device,
        )
        self.network.train()
        images = [v for v in decoded.values() if v.is_floating_point() and v.ndim >= 4]
        return torch.cat(images) if images else None
