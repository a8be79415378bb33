"""The one trainer family: autoencoder and latent diffusion training on pytorch-ignite, with exact resume.

Every bundle trains through :class:`AutoencoderTrainer` (MONAI ``AutoencoderKL``: L1 + KL, an optional
patch adversarial loss and an optional perceptual loss) and :class:`LatentDiffusionTrainer` (any MONAI
diffusion U-Net, including :class:`~medgen_monai.nets.ConditionedDiffusionUNet`, on autoencoder latents
or on pixels). Both are ignite :class:`~ignite.engine.Engine` subclasses sharing
:class:`GenerativeTrainer`, which owns what makes a run reproducible and resumable:

* **Batches by iteration.** :class:`IndexedBatches` builds batch ``i`` from a permutation seeded by
  ``(seed, epoch)``, so the data a run sees depends only on the iteration number, never on how often
  the run was interrupted (an ignite ``DataLoader`` iterator cannot be rewound to the middle of an epoch).
* **Randomness from one generator.** Noise, timesteps and condition dropout come from a
  ``torch.Generator`` owned by the trainer and saved in every checkpoint.
* **Checkpoints** hold the network, its EMA (``torch.optim.swa_utils.AveragedModel``), the optimizer,
  the LR scheduler, the iteration, the generator state and the trainer's own state (the latent scale
  factor), are written atomically (temp name + rename) and load with ``weights_only=True``. ``run()``
  continues from ``<output_dir>/checkpoints/last.pt`` when it exists, and the result is bit-identical
  to an uninterrupted run (``tests/test_trainer.py`` kills a run and compares).
* **What people look at:** a tqdm bar, TensorBoard scalars (loss terms, learning rate) and sample grids
  written to ``<output_dir>/samples/`` and TensorBoard every ``sample_every`` iterations.
* **Distributed data parallel** (:mod:`medgen_monai.engines.distributed`; a bundle's ``configs/multi_gpu_train.json``
  under ``torchrun``): when ``torch.distributed`` is initialised, each rank trains on its share of every global
  batch (:meth:`IndexedBatches.shard`); every draw from the trainer's generator is made for the whole batch and
  sliced (:meth:`GenerativeTrainer.shard_rows`), so the generator advances alike on every rank and the run equals
  the single-process run up to floating-point summation order; gradients are averaged in
  :meth:`GenerativeTrainer.optimise` (every optimiser, the discriminator's included), rank 0's modules are
  broadcast when a run starts, and only rank 0 writes checkpoints, sample grids, TensorBoard and the progress bar
  (``save_weights`` too). The network is never wrapped in ``DistributedDataParallel``, so checkpoints and weights
  files keep the plain module's keys, and every
  rank resumes from rank 0's ``last.pt``. Without a process group nothing of this runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.data import list_data_collate
from monai.inferers import Inferer, SimpleInferer
from monai.networks.schedulers import Scheduler
from monai.transforms import Randomizable
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..io.atomic import atomic_path
from ..io.writers import image_grid, save_image_2d, to_uint8
from ..nets.auxiliary import AuxiliaryLossNetwork
from .distributed import (
    all_gather_rows,
    average_gradients,
    average_scalars,
    barrier,
    broadcast_buffers,
    broadcast_modules,
    get_rank,
    get_world_size,
    rank_seed,
)
from .latents import LATENT_NORMALISATIONS, fit_latent_normalisation, normalise_latents
from .latents import numbers as _numbers
from .latents import plain as _plain
from .sampler import DiffusionSampler
from .schedules import schedule_for

__all__ = [
    "IndexedBatches",
    "GenerativeTrainer",
    "AutoencoderTrainer",
    "LatentDiffusionTrainer",
    "CheckpointError",
    "load_checkpoint",
    "CHECKPOINT_FORMAT",
]

#: stored in every checkpoint; a checkpoint without it (or from another trainer or bundle) is refused.
CHECKPOINT_FORMAT = "medgen-monai-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, or was written by another trainer or bundle."""


def load_checkpoint(path: str | Path, trainer: str | None = None, tag: str | None = None) -> dict[str, Any]:
    """Load a trainer checkpoint with ``weights_only=True`` and check where it comes from.

    Args:
        path: the ``.pt`` file.
        trainer: the expected trainer class name (``"LatentDiffusionTrainer"``); ``None``: any.
        tag: the expected run tag (a bundle sets it to its name); ``None``: any.

    Raises:
        CheckpointError: the file is missing or unreadable, is not a medgen-monai checkpoint, or
            belongs to another trainer or tag; the message names the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a medgen-monai trainer checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    if trainer is not None and state.get("trainer") != trainer:
        raise CheckpointError(f"{path}: written by {state.get('trainer')!r}, expected a {trainer!r} checkpoint")
    if tag is not None and state.get("tag") != tag:
        raise CheckpointError(
            f"{path}: belongs to run {state.get('tag')!r}, expected {tag!r} (a checkpoint from another bundle?)"
        )
    return state


class IndexedBatches:
    """Batch ``i`` of a run as a pure function of ``i``.

    Epoch ``e`` visits the dataset in a permutation drawn from ``(seed, e)``; the last incomplete
    batch of an epoch is dropped so that every batch has ``batch_size`` items.

    **Distributed runs.** ``batch_size`` is the *global* batch: with ``world_size`` processes, rank ``r`` draws
    items ``[r * s, (r + 1) * s)`` of every batch, ``s = batch_size / world_size`` (:meth:`shard` makes a rank's
    batches; the trainers call it when ``torch.distributed`` is initialised). The ranks together see exactly the
    batches one process would, so a run on N GPUs trains the single-process recipe (same batch size, learning
    rate and data order). Random transforms draw from ``(seed, iteration, rank)`` on each rank.

    Args:
        dataset: any indexable dataset (a MONAI ``Dataset`` / ``CacheDataset`` of dict records).
        batch_size: items per (global) batch (<= ``len(dataset)``, a multiple of ``world_size``).
        seed: permutation seed.
        collate_fn: how items become a batch (MONAI's ``list_data_collate`` by default).
        rank: this process's rank, in ``[0, world_size)``.
        world_size: the number of processes sharing each batch.
    """

    def __init__(
        self,
        dataset: Sequence[Any],
        batch_size: int,
        seed: int = 0,
        collate_fn: Callable[[list[Any]], Any] = list_data_collate,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) < batch_size:
            raise ValueError(f"the dataset has {len(dataset)} items, fewer than one batch of {batch_size}")
        if world_size < 1:
            raise ValueError(f"world_size must be >= 1, got {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}) for world_size {world_size}, got {rank}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size {batch_size} must be a multiple of world_size {world_size}: each of the "
                f"{world_size} processes takes an equal share of every batch"
            )
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.collate_fn = collate_fn
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._permutation: tuple[int, np.ndarray] | None = None

    @property
    def epoch_length(self) -> int:
        return len(self.dataset) // self.batch_size

    @property
    def shard_size(self) -> int:
        """Items of each batch this rank draws (``batch_size / world_size``)."""
        return self.batch_size // self.world_size

    def shard(self, rank: int, world_size: int) -> IndexedBatches:
        """The same batches split across ``world_size`` processes: rank ``rank``'s share of each."""
        return IndexedBatches(
            self.dataset, self.batch_size, self.seed, self.collate_fn, rank=rank, world_size=world_size
        )

    def global_indices(self, iteration: int) -> list[int]:
        """Dataset indices of the whole batch ``iteration`` (0-based), every rank's share in rank order."""
        epoch, position = divmod(int(iteration), self.epoch_length)
        if self._permutation is None or self._permutation[0] != epoch:
            self._permutation = (epoch, np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset)))
        start = position * self.batch_size
        return self._permutation[1][start : start + self.batch_size].tolist()

    def indices(self, iteration: int) -> list[int]:
        """Dataset indices of this rank's share of batch ``iteration`` (0-based; the whole batch in one process)."""
        indices = self.global_indices(iteration)
        if self.world_size == 1:
            return indices
        return indices[self.rank * self.shard_size : (self.rank + 1) * self.shard_size]

    def __call__(self, iteration: int) -> Any:
        # random transforms (augmentation, random crops) draw from a state set by (seed, iteration), so batch i
        # stays a pure function of i and a resumed run sees the same batches
        transform = getattr(self.dataset, "transform", None)
        if isinstance(transform, Randomizable):
            entropy = [self.seed, int(iteration), 1] + ([] if self.world_size == 1 else [self.rank])
            transform.set_random_state(seed=int(np.random.default_rng(entropy).integers(2**31)))
        return self.collate_fn([self.dataset[i] for i in self.indices(iteration)])


class GenerativeTrainer(Engine):
    """Shared machinery of the trainers (see the module docstring). Subclasses implement :meth:`train_step`.

    Args:
        network: the trained network.
        optimizer: its optimizer.
        batches: batch source (:class:`IndexedBatches`).
        max_iterations: total iterations of the run.
        output_dir: checkpoints (``checkpoints/``), sample grids (``samples/``), TensorBoard (``tensorboard/``).
        lr_scheduler: optional ``torch.optim.lr_scheduler`` stepped every iteration.
        ema_decay: EMA decay of the network weights; ``None`` disables EMA.
        checkpoint_every: iterations between checkpoints (one is always written at the end).
        sample_every: iterations between sample grids; 0 disables them.
        grad_clip: max gradient norm; ``None`` disables clipping.
        seed: seed of the trainer's generator (noise, timesteps, dropout).
        tag: a run tag stored in checkpoints (bundles use their name) and checked on resume.
        device: training device.
        progress: show a tqdm bar (rank 0 only in a distributed run).
        tensorboard: write TensorBoard event files (rank 0 only in a distributed run).
        max_epochs: train this many passes over ``batches`` instead (``max_epochs x batches.epoch_length``
            iterations; MONAI's ``train#trainer#max_epochs`` property); ``None``: ``max_iterations``.

    In a distributed run (``torch.distributed`` initialised before the trainer is made) ``batches`` is sharded
    across the ranks and ``network`` must be the plain module, not a ``DistributedDataParallel`` wrapper.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: IndexedBatches,
        max_iterations: int,
        output_dir: str | Path,
        lr_scheduler: Any = None,
        ema_decay: float | None = 0.999,
        checkpoint_every: int = 500,
        sample_every: int = 0,
        grad_clip: float | None = 1.0,
        seed: int = 0,
        tag: str = "",
        device: str | torch.device = "cpu",
        progress: bool = True,
        tensorboard: bool = True,
        max_epochs: int | None = None,
    ) -> None:
        if max_epochs is not None:
            if int(max_epochs) < 1:
                raise ValueError(f"max_epochs must be >= 1 or None (train max_iterations), got {max_epochs}")
            max_iterations = int(max_epochs) * batches.epoch_length
        if max_iterations < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations}")
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        if sample_every < 0:
            raise ValueError(f"sample_every must be >= 0 (0 disables sample grids), got {sample_every}")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or None, got {ema_decay}")
        if isinstance(network, nn.parallel.DistributedDataParallel):
            raise ValueError(
                "network: pass the plain module, not a DistributedDataParallel wrapper; in a distributed run "
                "the trainer averages the gradients itself and keeps the module's own state_dict keys"
            )
        self.rank, self.world_size = get_rank(), get_world_size()
        if self.world_size > 1:
            if not callable(getattr(batches, "shard", None)):
                raise ValueError(
                    f"batches: a distributed run needs batches that can be sharded (IndexedBatches), "
                    f"got {type(batches).__name__}"
                )
            batches = batches.shard(self.rank, self.world_size)
        super().__init__(self._iteration)
        self.device = torch.device(device)
        self.network = network.to(self.device)
        self.optimizer = optimizer
        self.batches = batches
        self.max_iterations = int(max_iterations)
        self.output_dir = Path(output_dir)
        self.lr_scheduler = lr_scheduler
        self.ema = (
            None
            if ema_decay is None
            else AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(ema_decay), use_buffers=True)
        )
        self.checkpoint_every = int(checkpoint_every)
        self.sample_every = int(sample_every)
        self.grad_clip = grad_clip
        self.generator = torch.Generator().manual_seed(int(seed))
        self.tag = str(tag)
        self._run_started: float | None = None
        self._seconds_before = 0.0
        self.progress = progress
        self._tensorboard = tensorboard
        self._summary: Any = None
        self.add_event_handler(Events.ITERATION_COMPLETED, self._after_iteration)
        self.add_event_handler(Events.COMPLETED, self._at_end)

    # ---- to implement --------------------------------------------------------------------------
    def train_step(self, batch: Any) -> dict[str, torch.Tensor]:
        """One optimisation step on ``batch``; returns the loss terms (the ``"loss"`` key is the total)."""
        raise NotImplementedError

    def sample_images(self) -> torch.Tensor | None:
        """``(N, C, *spatial)`` images in [0, 1] to show in a grid, or ``None``."""
        return None

    def extra_state(self) -> dict[str, Any]:
        """Trainer-specific state saved in checkpoints (tensors, numbers, strings)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`extra_state` saved."""

    # ---- paths ---------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.output_dir / "checkpoints" / "last.pt"

    @property
    def model(self) -> nn.Module:
        """The weights to use for inference: the EMA network when EMA is on."""
        return self.network if self.ema is None else self.ema.module

    @property
    def is_main_process(self) -> bool:
        """Rank 0 (always, in a single process): the process that writes checkpoints, samples and logs."""
        return self.rank == 0

    def trained_modules(self) -> list[nn.Module]:
        """The modules the trainer optimises (the network; subclasses add theirs, e.g. a discriminator): a
        distributed run broadcasts rank 0's buffers of these after every iteration."""
        return [self.network]

    # ---- distributed helpers (identities in a single process) ---------------------------------------
    def global_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """``shape`` of this rank's share of a batch -> the shape of the whole batch (dim 0 times the ranks)."""
        return (int(shape[0]) * self.world_size, *(int(s) for s in shape[1:]))

    def shard_rows(self, value: torch.Tensor) -> torch.Tensor:
        """This rank's rows of ``value`` drawn for the whole batch (:meth:`global_shape`): every rank draws the same
        numbers from the trainer's generator, keeps its own, and the generator stays in step across the ranks."""
        if self.world_size == 1:
            return value
        size = value.shape[0] // self.world_size
        return value[self.rank * size : (self.rank + 1) * size]

    def gather_rows(self, value: torch.Tensor) -> torch.Tensor:
        """Every rank's ``value`` concatenated in rank order: the whole batch's (the identity in one process)."""
        return all_gather_rows(value) if self.world_size > 1 else value

    def preview_batch(self) -> Any:
        """The run's first batch, whole (every rank's share), for sample grids: the previews one process shows."""
        return (self.batches.shard(0, 1) if self.world_size > 1 else self.batches)(0)

    # ---- one iteration -------------------------------------------------------------------------
    def _iteration(self, engine: Engine, _: Any) -> dict[str, float]:
        batch = self.batches(engine.state.iteration - 1)
        self.network.train()
        losses = self.train_step(batch)
        if self.world_size > 1:
            broadcast_buffers(self.trained_modules())  # running statistics follow rank 0, as DDP's broadcast_buffers
        if self.ema is not None:
            self.ema.update_parameters(self.network)
        if self.lr_scheduler is not None:
            self.lr_scheduler.step()
        if self.world_size > 1:  # the logged terms are the whole batch's: the mean of the ranks' shares
            return average_scalars(losses)
        return {k: float(v.detach()) for k, v in losses.items()}

    def optimise(
        self, loss: torch.Tensor, network: nn.Module | None = None, optimizer: torch.optim.Optimizer | None = None
    ) -> None:
        """Backward, clip, step (``network`` / ``optimizer`` default to the trained ones).

        In a distributed run the gradients of ``optimizer``'s parameters are averaged over the ranks between
        backward and clipping, so every rank clips and steps the same gradients: those of the whole batch's loss
        when ``loss`` is a mean over the batch.
        """
        optimizer = optimizer or self.optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.world_size > 1:
            average_gradients(p for group in optimizer.param_groups for p in group["params"])
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_((network or self.network).parameters(), self.grad_clip)
        optimizer.step()

    # ---- logging, samples, checkpoints ------------------------------------------------------------
    def _writer(self) -> Any:
        if self._summary is None and self._tensorboard and self.is_main_process:
            from torch.utils.tensorboard import SummaryWriter

            self._summary = SummaryWriter(str(self.output_dir / "tensorboard"), purge_step=self.state.iteration)
        return self._summary

    def _after_iteration(self, engine: Engine) -> None:
        iteration = engine.state.iteration
        writer = self._writer()
        if writer is not None:
            for key, value in engine.state.output.items():
                writer.add_scalar(f"train/{key}", value, iteration)
            writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], iteration)
        if self.sample_every and iteration % self.sample_every == 0 and self.is_main_process:
            self.write_samples(iteration)
        if iteration % self.checkpoint_every == 0:
            self.save_checkpoint()

    def _at_end(self, engine: Engine) -> None:
        if engine.state.iteration % self.checkpoint_every:
            self.save_checkpoint()
        if self._summary is not None:
            self._summary.flush()

    def write_samples(self, iteration: int) -> Path | None:
        """Write a sample grid PNG to ``samples/iteration_<n>.png`` (and TensorBoard)."""
        images = self.sample_images()
        if images is None:
            return None
        images = images.detach().float().cpu().clamp(0, 1)
        if images.ndim == 5:  # 3D: the middle axial slice
            images = images[..., images.shape[-1] // 2]
        grid = image_grid([to_uint8(image) for image in images], columns=min(8, len(images)))
        path = save_image_2d(grid, self.output_dir / "samples" / f"iteration_{iteration:07d}.png")
        writer = self._writer()
        if writer is not None:
            writer.add_image(
                "samples",
                grid if grid.ndim == 2 else np.moveaxis(grid, -1, 0),
                iteration,
                dataformats="HW" if grid.ndim == 2 else "CHW",
            )
        return path

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "trainer": type(self).__name__,
            "tag": self.tag,
            "iteration": int(self.state.iteration),
            "network": self.network.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": None if self.lr_scheduler is None else self.lr_scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "train_seconds": self.train_seconds,
            "extra": self.extra_state(),
        }

    def save_checkpoint(self) -> Path:
        """Write ``checkpoints/last.pt`` atomically (rank 0 only in a distributed run: every rank holds the same
        state)."""
        if self.is_main_process:
            with atomic_path(self.checkpoint_path) as tmp:
                torch.save(self.state_for_checkpoint(), tmp)
        return self.checkpoint_path

    def load_state(self, state: Mapping[str, Any]) -> int:
        """Restore a checkpoint's state; returns its iteration."""
        self.network.load_state_dict(state["network"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.lr_scheduler is not None and state.get("lr_scheduler") is not None:
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.generator.set_state(state["generator"])
        self._seconds_before = float(state.get("train_seconds", 0.0))
        self.load_extra_state(state.get("extra") or {})
        return int(state["iteration"])

    def training_record(self) -> dict[str, Any]:
        """How the weights were trained, for a weights file's ``extra`` and the model card: iterations, wall-clock
        seconds (summed over resumed runs), CPU threads and device."""
        record = {
            "iterations": int(self.state.iteration or 0),
            "train_seconds": round(self.train_seconds, 1),
            "threads": torch.get_num_threads(),
            "device": str(self.device),
        }
        if self.world_size > 1:
            record["processes"] = self.world_size
        return record

    def weights_record(self) -> dict[str, Any]:
        """What a weights file of this trainer records besides the weights: :meth:`training_record`, and what
        inference needs from training (the latent diffusion trainer adds its latent normalisation)."""
        return self.training_record()

    def save_weights(
        self,
        path: str | Path,
        bundle: str,
        role: str,
        extra: Mapping[str, Any] | None = None,
        half: bool = False,
        network: nn.Module | None = None,
    ) -> Path:
        """Write :attr:`model` (the EMA network when EMA is on) to ``path`` with :meth:`weights_record` and ``extra``
        (:func:`medgen_monai.io.weights.save_weights`: atomic, rank 0 only in a distributed run).

        Args:
            path: the weights file (a bundle config gives ``<trained_model_dir>/<role>.pt``).
            bundle: the bundle name stored with the weights (checked when they are loaded).
            role: the network's role in the bundle (``"diffusion"``, ``"autoencoder"``).
            extra: more to record (a method's settings inference must match, e.g. VAP's ``prototype``).
            half: store floating-point tensors as float16 (demo weights kept in the repository).
            network: a part of :attr:`model` to write instead (MedCoDi-M's joint stage: its connectors).
        """
        from ..io.weights import save_weights

        record = {**self.weights_record(), **dict(extra or {})}
        return save_weights(path, self.model if network is None else network, bundle, role, record, half=half)

    @property
    def train_seconds(self) -> float:
        """Wall-clock seconds spent training so far, summed over resumed runs (for model cards)."""
        running = 0.0 if self._run_started is None else time.perf_counter() - self._run_started
        return self._seconds_before + running

    def run_training(self, resume: bool = True) -> Engine:
        """Train to ``max_iterations``, continuing from ``checkpoints/last.pt`` when it exists and ``resume``.

        In a distributed run every rank resumes from the same (rank 0's) checkpoint, which needs a file system
        every rank sees (one machine, or a shared ``output_dir``), then rank 0's modules are broadcast.
        """
        start = 0
        if resume and self.checkpoint_path.is_file():
            start = self.load_state(load_checkpoint(self.checkpoint_path, type(self).__name__, self.tag))
        if start >= self.max_iterations:
            return self
        if self.world_size > 1:  # ranks whose networks were initialised from other seeds start from rank 0's
            broadcast_modules([*self.trained_modules(), self.ema])
        self._run_started = time.perf_counter()
        epoch_length = self.batches.epoch_length
        self.load_state_dict({"iteration": start, "epoch_length": epoch_length, "max_iters": self.max_iterations})
        bar = None
        if self.progress and self.is_main_process:
            from ignite.handlers import ProgressBar

            bar = ProgressBar(persist=True, desc=type(self).__name__)
            bar.attach(self, output_transform=lambda output: {"loss": output["loss"]})
        try:
            self.run(data=None, max_iters=self.max_iterations, epoch_length=epoch_length)
        finally:
            self._seconds_before, self._run_started = self.train_seconds, None
            if bar is not None:
                bar.close()
        barrier()  # rank 0's last checkpoint is written when any rank returns
        return self


class AutoencoderTrainer(GenerativeTrainer):
    """``AutoencoderKL`` training: L1 reconstruction + ``kl_weight`` KL (+ perceptual, + patch adversarial).

    Args:
        autoencoder: a MONAI ``AutoencoderKL`` (2D or 3D).
        optimizer: its optimizer.
        batches: batches of dicts with ``image_key`` holding ``(B, C, *spatial)`` images.
        image_key: the image key.
        kl_weight: weight of the KL term.
        perceptual_loss: an ``nn.Module`` ``(x_hat, x) -> scalar`` built from a local weights path
            (e.g. MONAI ``PerceptualLoss``); ``None`` by default (nothing is downloaded).
        perceptual_weight: its weight.
        discriminator: a MONAI ``PatchDiscriminator`` for the adversarial loss; ``None`` disables it.
        discriminator_optimizer: its optimizer (required with a discriminator).
        adversarial_weight: generator adversarial weight.
        adversarial_start: iteration from which the adversarial terms are used (warm-up without them).
        num_samples: images of the first batch shown with their reconstructions in sample grids.
        inferer: how sample grids reconstruct (MONAI ``Inferer``: ``inferer(images, network)``; the bundles' train
            ``inferer`` property): ``SimpleInferer`` (default) for whole images, a ``SlidingWindowInferer`` for
            volumes larger than the training crops.
        **kwargs: :class:`GenerativeTrainer` arguments.
    """

    def __init__(
        self,
        autoencoder: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: IndexedBatches,
        image_key: str = "image",
        kl_weight: float = 1e-6,
        perceptual_loss: nn.Module | None = None,
        perceptual_weight: float = 0.3,
        discriminator: nn.Module | None = None,
        discriminator_optimizer: torch.optim.Optimizer | None = None,
        adversarial_weight: float = 0.01,
        adversarial_start: int = 0,
        num_samples: int = 8,
        inferer: Inferer | None = None,
        **kwargs: Any,
    ) -> None:
        if kl_weight < 0 or perceptual_weight < 0 or adversarial_weight < 0:
            raise ValueError("loss weights must be >= 0")
        if (discriminator is None) != (discriminator_optimizer is None):
            raise ValueError("give both discriminator and discriminator_optimizer, or neither")
        super().__init__(autoencoder, optimizer, batches, **kwargs)
        self.image_key = image_key
        self.kl_weight = float(kl_weight)
        self.perceptual_loss = perceptual_loss
        self.perceptual_weight = float(perceptual_weight)
        self.discriminator = None if discriminator is None else discriminator.to(self.device)
        self.discriminator_optimizer = discriminator_optimizer
        self.adversarial_weight = float(adversarial_weight)
        self.adversarial_start = int(adversarial_start)
        self.num_samples = int(num_samples)
        self.inferer = SimpleInferer() if inferer is None else inferer
        if self.discriminator is not None:
            from monai.losses import PatchAdversarialLoss

            self.adversarial_loss = PatchAdversarialLoss(criterion="least_squares")

    def _images(self, batch: Mapping[str, Any]) -> torch.Tensor:
        if self.image_key not in batch:
            raise ValueError(f"batch has no {self.image_key!r} (keys: {sorted(batch)})")
        return torch.as_tensor(batch[self.image_key]).float().to(self.device)

    def trained_modules(self) -> list[nn.Module]:
        return [self.network] + ([] if self.discriminator is None else [self.discriminator])

    def _forward(self, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(reconstruction, z_mu, z_sigma)``; the reparameterisation noise comes from the global RNG seeded with
        ``seed``. In a distributed run an ``AutoencoderKL`` (``encode`` / ``sampling`` / ``decode``) gets this rank's
        rows of the noise one process would draw for the whole batch; another network, noise of its rank's own."""
        with torch.random.fork_rng(devices=[]):
            if self.world_size == 1 or not all(hasattr(self.network, m) for m in ("encode", "sampling", "decode")):
                torch.manual_seed(seed if self.world_size == 1 else rank_seed(seed, self.rank))
                return self.network(images)
            torch.manual_seed(seed)
            z_mu, z_sigma = self.network.encode(images)
            # MONAI's sampling draws randn_like(z_sigma), in z_sigma's memory layout (channels-last from oneDNN):
            # draw the whole batch's noise in the same layout, so that a rank's rows are the ones one process draws
            shape = self.global_shape(z_sigma.shape)
            whole = (
                torch.empty_strided(shape, z_sigma.stride(), dtype=z_sigma.dtype, device=z_sigma.device)
                if z_sigma.stride(0) == z_sigma[0].numel()
                else z_sigma.new_empty(shape)
            )
            noise = self.shard_rows(torch.randn_like(whole))
            return self.network.decode(z_mu + noise * z_sigma), z_mu, z_sigma

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        images = self._images(batch)
        # the encoder's reparameterisation draws from the global RNG: fork it from ours for exact resume
        reconstruction, z_mu, z_sigma = self._forward(
            images, int(torch.randint(0, 2**62, (1,), generator=self.generator))
        )
        reduce = list(range(1, z_mu.ndim))
        kl = 0.5 * torch.sum(z_mu.pow(2) + z_sigma.pow(2) - torch.log(z_sigma.pow(2) + 1e-12) - 1, dim=reduce).mean()
        l1 = F.l1_loss(reconstruction.float(), images)
        losses = {"l1": l1, "kl": kl}
        loss = l1 + self.kl_weight * kl
        if self.perceptual_loss is not None:
            losses["perceptual"] = self.perceptual_loss(reconstruction.float(), images)
            loss = loss + self.perceptual_weight * losses["perceptual"]
        adversarial = self.discriminator is not None and self.state.iteration > self.adversarial_start
        if adversarial:
            logits = self.discriminator(reconstruction.contiguous().float())[-1]
            losses["generator_adversarial"] = self.adversarial_loss(
                logits, target_is_real=True, for_discriminator=False
            )
            loss = loss + self.adversarial_weight * losses["generator_adversarial"]
        self.optimise(loss)
        if adversarial:
            fake = self.discriminator(reconstruction.contiguous().detach())[-1]
            real = self.discriminator(images.contiguous())[-1]
            d_loss = 0.5 * (
                self.adversarial_loss(fake, target_is_real=False, for_discriminator=True)
                + self.adversarial_loss(real, target_is_real=True, for_discriminator=True)
            )
            self.optimise(d_loss, self.discriminator, self.discriminator_optimizer)
            losses["discriminator"] = d_loss
        losses["loss"] = loss
        return losses

    @torch.inference_mode()
    def sample_images(self) -> torch.Tensor:
        """Inputs (top row) and EMA reconstructions (bottom row) of the first batch of the run."""
        batch = self.preview_batch()
        images = self._images(batch)[: self.num_samples]
        model = self.model.eval()
        reconstruct = model.reconstruct if hasattr(model, "reconstruct") else (lambda x: model(x)[0])
        reconstruction = self.inferer(images, reconstruct)
        return torch.cat([images, reconstruction.float()]).clamp(0, 1)

    def extra_state(self) -> dict[str, Any]:
        if self.discriminator is None:
            return {}
        return {
            "discriminator": self.discriminator.state_dict(),
            "discriminator_optimizer": self.discriminator_optimizer.state_dict(),
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        if self.discriminator is not None and "discriminator" in state:
            self.discriminator.load_state_dict(state["discriminator"])
            self.discriminator_optimizer.load_state_dict(state["discriminator_optimizer"])


class LatentDiffusionTrainer(GenerativeTrainer):
    """Diffusion U-Net training on (frozen) autoencoder latents, or on pixels without an autoencoder.

    * **Latent normalisation**: latents are ``(z - latent_shift) * scale_factor``, fitted on the first batch
      unless given: ``"global"`` is one ``1 / std`` (Rombach et al.) and no shift; ``"per_channel"`` is each
      channel's mean and ``1 / std`` (an autoencoder's channels can differ in spread by an order of magnitude,
      and one global factor then leaves some channels far from the unit noise the schedule assumes).
      Saved in checkpoints and used by the sampler.
    * **Targets and timesteps** come from the scheduler's adapter (:mod:`medgen_monai.engines.schedules`):
      ``epsilon`` / ``v_prediction`` / ``sample`` from a DDPM or DDIM scheduler's ``prediction_type``; with an
      ``RFlowScheduler``, the flow velocity ``x0 - noise`` (MONAI's convention). ``min_snr_gamma`` weights
      each sample's loss by min-SNR-gamma (Hang et al. 2023; DDPM/DDIM only).
    * **Latent cache** (``latent_cache=True``): the whole training set is encoded once, in dataset order, before
      the first iteration (the encoder's mean and spread of every item), and each iteration draws its latents
      from those posteriors, ``mu + sigma * eps``, instead of running the encoder. Only for deterministic
      training transforms (a random augmentation would be frozen into the cache). A resumed run refills the
      cache the same way, so resume stays exact.
    * **Conditions**: ``conditions`` maps batch keys to U-Net keyword inputs, e.g.
      ``{"label": "class_labels"}`` or ``{"context": "context"}``. With probability
      ``condition_dropout`` a sample's conditions are replaced by the null condition (the U-Net's null
      class for ``class_labels``; ``null_conditions[name]`` otherwise) for classifier-free guidance.

    Args:
        network: the diffusion U-Net (``forward(x, timesteps, **conditions)``).
        optimizer: its optimizer.
        batches: batches of dicts with ``image_key`` and the condition keys.
        scheduler: MONAI ``DDPMScheduler``, ``DDIMScheduler`` or ``RFlowScheduler``.
        autoencoder: frozen MONAI ``AutoencoderKL`` (its ``encode`` mean is the latent); ``None``: pixel space.
        scale_factor: latent scale factor, one number or one per channel; ``None``: fitted on the first batch.
        latent_shift: latent shift, one number or one per channel (with a given ``scale_factor``).
        latent_normalisation: how a missing ``scale_factor`` is fitted: ``"global"`` or ``"per_channel"``.
        min_snr_gamma: min-SNR loss weighting's gamma (5 in the paper); ``None``: unweighted.
        latent_cache: encode the training set once and sample latents from the cached posteriors.
        image_key: the image key.
        conditions: batch key -> U-Net keyword.
        null_conditions: U-Net keyword -> the null value ``(1, ...)`` for keys other than ``class_labels``.
        condition_dropout: probability of dropping a sample's conditions.
        sampler: the :class:`DiffusionSampler` used for the sample grids (``None``: no grids).
        sample_conditions: U-Net keyword -> ``(N, ...)`` conditions of the grid (e.g. each class twice).
        sample_seed: first seed of the grid samples.
        auxiliary_weights: weight of each training-only loss the network publishes in its
            ``auxiliary_losses`` dict after a forward (e.g. ``{"prototype": 1.0}``); unnamed terms weigh 1.
        **kwargs: :class:`GenerativeTrainer` arguments.
    """

    def __init__(
        self,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: IndexedBatches,
        scheduler: Scheduler,
        autoencoder: nn.Module | None = None,
        scale_factor: float | Sequence[float] | None = None,
        latent_shift: float | Sequence[float] = 0.0,
        latent_normalisation: str = "global",
        min_snr_gamma: float | None = None,
        latent_cache: bool = False,
        image_key: str = "image",
        conditions: Mapping[str, str] | None = None,
        null_conditions: Mapping[str, torch.Tensor] | None = None,
        condition_dropout: float = 0.1,
        sampler: DiffusionSampler | None = None,
        sample_conditions: Mapping[str, torch.Tensor] | None = None,
        sample_seed: int = 0,
        auxiliary_weights: Mapping[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        schedule = schedule_for(scheduler)
        if not 0.0 <= condition_dropout < 1.0:
            raise ValueError(f"condition_dropout must be in [0, 1), got {condition_dropout}")
        if scale_factor is not None and not all(v > 0 for v in _numbers(scale_factor)):
            raise ValueError(f"scale_factor must be > 0 (one number or one per channel), got {scale_factor}")
        if latent_normalisation not in LATENT_NORMALISATIONS:
            raise ValueError(
                f"latent_normalisation must be one of {LATENT_NORMALISATIONS}, got {latent_normalisation!r}"
            )
        if min_snr_gamma is not None and not min_snr_gamma > 0:
            raise ValueError(f"min_snr_gamma must be > 0 (5 in Hang et al.) or None, got {min_snr_gamma}")
        super().__init__(network, optimizer, batches, **kwargs)
        self.schedule = schedule
        self.scheduler = schedule.scheduler
        self.autoencoder = None if autoencoder is None else autoencoder.to(self.device).eval().requires_grad_(False)
        self.scale_factor = None if scale_factor is None else _plain(scale_factor)
        self.latent_shift = _plain(latent_shift)
        self.latent_normalisation = latent_normalisation
        self.min_snr_gamma = None if min_snr_gamma is None else float(min_snr_gamma)
        if latent_cache and autoencoder is None:
            raise ValueError("latent_cache needs an autoencoder (pixel-space training has no latents to cache)")
        self.latent_cache = bool(latent_cache)
        self._posteriors: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.min_snr_gamma is not None:  # a schedule without min-SNR weighting refuses it now, not at step one
            self.schedule.loss_weights(torch.zeros(1, dtype=torch.long), self.min_snr_gamma)
        self.image_key = image_key
        self.conditions = dict(conditions or {})
        self.null_conditions = {k: torch.as_tensor(v) for k, v in (null_conditions or {}).items()}
        for key, name in self.conditions.items():
            if name != "class_labels" and name not in self.null_conditions and condition_dropout > 0:
                raise ValueError(f"condition {key!r} -> {name!r} needs null_conditions[{name!r}] for condition dropout")
        self.condition_dropout = float(condition_dropout)
        self.sampler = sampler
        self.sample_conditions = dict(sample_conditions or {})
        self.sample_seed = int(sample_seed)
        self.auxiliary_weights = {str(k): float(v) for k, v in (auxiliary_weights or {}).items()}
        if any(w < 0 for w in self.auxiliary_weights.values()):
            raise ValueError(f"auxiliary_weights must be >= 0, got {self.auxiliary_weights}")

    # ---- data -> latents -----------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, *spatial)`` -> scaled latents (the encoder mean times the scale factor)."""
        if self.autoencoder is None:
            return images
        z_mu, _ = self.autoencoder.encode(images)
        if self.scale_factor is None:  # fitted on the whole first batch: every rank's share, in a distributed run
            self.scale_factor, self.latent_shift = fit_latent_normalisation(
                self.gather_rows(z_mu), self.latent_normalisation
            )
        return normalise_latents(z_mu, self.scale_factor, self.latent_shift)

    @torch.no_grad()
    def _fill_latent_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's ``(mu, sigma)`` of every training item, ``(N, C, *spatial)`` each, in dataset order (every
        rank of a distributed run encodes the whole set, in chunks of its share of a batch)."""
        dataset, size = self.batches.dataset, self.batches.shard_size
        mus, sigmas = [], []
        for start in range(0, len(dataset), size):
            items = self.batches.collate_fn([dataset[i] for i in range(start, min(start + size, len(dataset)))])
            mu, sigma = self.autoencoder.encode(torch.as_tensor(items[self.image_key]).float().to(self.device))
            mus.append(mu.cpu())
            sigmas.append(sigma.cpu())
        return torch.cat(mus), torch.cat(sigmas)

    def latents(self, batch: Mapping[str, Any], iteration: int) -> torch.Tensor:
        """The normalised latents of batch ``iteration`` (0-based): encoded now, or drawn from the cache."""
        if not self.latent_cache:
            return self.encode(torch.as_tensor(batch[self.image_key]).float().to(self.device))
        if self._posteriors is None:
            self._posteriors = self._fill_latent_cache()
            if self.scale_factor is None:  # fitted on the whole training set's means
                self.scale_factor, self.latent_shift = fit_latent_normalisation(
                    self._posteriors[0], self.latent_normalisation
                )
        index = torch.as_tensor(self.batches.indices(iteration))
        mu, sigma = self._posteriors[0][index], self._posteriors[1][index]
        z = mu + sigma * self.shard_rows(torch.randn(self.global_shape(mu.shape), generator=self.generator))
        return normalise_latents(z.to(self.device), self.scale_factor, self.latent_shift)

    def _null_class(self) -> int:
        null = getattr(self.network, "null_class", None)
        if null is None:
            raise ValueError(
                "class_labels dropout needs a U-Net with a null class (medgen_monai.nets.ConditionedDiffusionUNet)"
            )
        return int(null)

    def _conditions(self, batch: Mapping[str, Any], size: int) -> dict[str, torch.Tensor]:
        drop = (
            self.shard_rows(torch.rand(self.global_shape((size,)), generator=self.generator)) < self.condition_dropout
        )
        out = {}
        for key, name in self.conditions.items():
            if key not in batch:
                raise ValueError(f"batch has no condition {key!r} (keys: {sorted(batch)})")
            value = torch.as_tensor(batch[key]).to(self.device)
            if self.condition_dropout > 0:
                if name == "class_labels" and not value.is_floating_point():
                    value = torch.where(drop.to(self.device), torch.full_like(value, self._null_class()), value.long())
                else:
                    null = (
                        self.null_conditions[name]
                        if name in self.null_conditions
                        else F.one_hot(torch.tensor([self._null_class()]), value.shape[-1]).float()
                    ).to(value)
                    mask = drop.to(self.device).view(-1, *([1] * (value.ndim - 1)))
                    value = torch.where(mask, null.expand_as(value), value)
            out[name] = value
        return out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict."""
        return self.schedule.training_target(x0, noise, timesteps)

    def training_noise(self, x0: torch.Tensor) -> torch.Tensor:
        """Noise like ``x0`` from the trainer's generator (this rank's rows of the whole batch's, when distributed)."""
        return self.shard_rows(torch.randn(self.global_shape(x0.shape), generator=self.generator)).to(self.device)

    def training_timesteps(self, x0: torch.Tensor) -> torch.Tensor:
        """Training timesteps for ``x0`` from the trainer's generator (this rank's rows of the whole batch's)."""
        if self.world_size == 1:
            return self.schedule.training_timesteps(x0, self.generator)
        whole = x0[:1].expand(*self.global_shape(x0.shape))  # the schedule reads the shape and device only
        return self.shard_rows(self.schedule.training_timesteps(whole, self.generator))

    def train_step(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.image_key not in batch:
            raise ValueError(f"batch has no {self.image_key!r} (keys: {sorted(batch)})")
        x0 = self.latents(batch, self.state.iteration - 1)
        noise = self.training_noise(x0)
        timesteps = self.training_timesteps(x0)
        noisy = self.schedule.add_noise(x0, noise, timesteps)
        prediction = self.network(noisy, timesteps, **self._conditions(batch, x0.shape[0]))
        errors = (prediction.float() - self.target(x0, noise, timesteps).float()).pow(2).flatten(1).mean(1)
        diffusion = (self.schedule.loss_weights(timesteps, self.min_snr_gamma).to(errors) * errors).mean()
        return self.optimise_with_auxiliary({"diffusion": diffusion})

    def optimise_with_auxiliary(self, losses: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Add the training-only terms the network published in its last forward (an
        :class:`~medgen_monai.nets.AuxiliaryLossNetwork`'s ``pop_auxiliary_losses()``, weighed by
        ``auxiliary_weights``) to the sum of ``losses``, take the optimiser step, and return every term and
        ``"loss"``, the total."""
        loss = sum(losses.values())
        # networks with training-only terms (VAP-Diffusion's L_proto) publish them after each forward; taking them
        # clears them, so no autograd graph outlives the step (and the network stays deep-copyable for EMA)
        auxiliary = self.network.pop_auxiliary_losses() if isinstance(self.network, AuxiliaryLossNetwork) else {}
        for name, value in auxiliary.items():
            losses[name] = value
            loss = loss + self.auxiliary_weights.get(name, 1.0) * value
        self.optimise(loss)
        losses["loss"] = loss
        return losses

    # ---- samples -------------------------------------------------------------------------------
    def latent_shape(self) -> tuple[int, ...]:
        batch = self.batches(0)
        return tuple(self.encode(torch.as_tensor(batch[self.image_key][:1]).float().to(self.device)).shape[1:])

    def sample_images(self) -> torch.Tensor | None:
        if self.sampler is None or not self.sample_conditions:
            return None
        count = len(next(iter(self.sample_conditions.values())))
        self.sampler.autoencoder = self.autoencoder
        self.sampler.scale_factor = 1.0 if self.scale_factor is None else self.scale_factor
        self.sampler.latent_shift = self.latent_shift
        null = {}
        for name, value in self.sample_conditions.items():
            if name == "class_labels" and not value.is_floating_point():
                null[name] = torch.full_like(value, self._null_class())
            elif name in self.null_conditions:
                null[name] = self.null_conditions[name].expand(count, *self.null_conditions[name].shape[1:])
        images = self.sampler(
            self.model,
            self.latent_shape(),
            list(range(self.sample_seed, self.sample_seed + count)),
            condition=self.sample_conditions,
            null_condition=null or None,
            device=self.device,
        )
        self.network.train()
        return images

    def extra_state(self) -> dict[str, Any]:
        return {
            "scale_factor": math.nan if self.scale_factor is None else self.scale_factor,
            "latent_shift": self.latent_shift,
        }

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        value = state.get("scale_factor", math.nan)
        self.scale_factor = None if value is None or (isinstance(value, float) and math.isnan(value)) else _plain(value)
        self.latent_shift = _plain(state.get("latent_shift", 0.0))

    def weights_record(self) -> dict[str, Any]:
        return {**self.latent_normalisation_extra(), **self.training_record()}

    def latent_normalisation_extra(self) -> dict[str, Any]:
        """What inference needs to map sampled latents back to the autoencoder's: ``scale_factor`` and
        ``latent_shift`` (for the weights file's ``extra``)."""
        return {"scale_factor": self.scale_factor, "latent_shift": self.latent_shift}
