"""Distributed data-parallel training for the trainer family, launched the MONAI model zoo's way.

A bundle's ``configs/multi_gpu_train.json`` is merged on top of its training configs and run with
``python -m torch.distributed.run --nproc_per_node N -m monai.bundle run --config_file "[...]"``: it sets
``device`` to :func:`distributed_device`, initialises the process group in ``initialize`` with
:func:`init_distributed` (backend :func:`distributed_backend`: ``nccl`` with CUDA, else ``gloo``) and destroys it
in ``finalize`` with :func:`destroy_distributed`.

Unlike the zoo's configs, the network is *not* wrapped in ``DistributedDataParallel``: the trainers reach into
their networks (``auxiliary_losses``, ``training_losses``, ``null_class``, a MedCoDi-M stream of a joint network,
an EMA deep copy) and save plain ``state_dict`` keys. :class:`~medgen_monai.engines.GenerativeTrainer` does what
DDP would instead, with the functions here: it broadcasts rank 0's modules when a run starts
(:func:`broadcast_modules`), averages every optimiser's gradients after ``backward`` (:func:`average_gradients`),
follows rank 0's buffers after each step (:func:`broadcast_buffers`), and only rank 0 writes.

Every function is a no-op (or the identity) when ``torch.distributed`` is not initialised, so single-process
training is unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "BACKENDS",
    "all_gather_rows",
    "average_gradients",
    "average_scalars",
    "barrier",
    "broadcast_buffers",
    "broadcast_modules",
    "destroy_distributed",
    "distributed_backend",
    "distributed_device",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "rank_seed",
]

#: the process-group backends :func:`init_distributed` accepts.
BACKENDS = ("nccl", "gloo")

# collectives are done in buckets of at most this many bytes (as DDP's default bucket of 25 MiB)
_BUCKET_BYTES = 25 * 2**20


def is_distributed() -> bool:
    """``torch.distributed`` is available and its default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank in the default process group; 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """The number of processes in the default process group; 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (the process that writes); before the process group exists, torchrun's ``RANK`` decides."""
    if is_distributed():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def distributed_backend() -> str:
    """The process-group backend for this machine: ``"nccl"`` when CUDA is available, else ``"gloo"`` (CPU)."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def distributed_device() -> torch.device:
    """This process's device: ``cuda:<LOCAL_RANK>`` (torchrun sets ``LOCAL_RANK``) with CUDA, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def init_distributed(backend: str | None = None, device: str | torch.device | None = None) -> bool:
    """Initialise the default process group from torchrun's environment (once) and select this rank's GPU.

    Args:
        backend: ``"nccl"`` or ``"gloo"``; ``None``: :func:`distributed_backend`.
        device: this rank's device (a CUDA device is made current); ``None``: :func:`distributed_device`.

    Returns:
        ``True`` (the process group is initialised), so that a config's ``initialize`` list can record it.

    Raises:
        ValueError: an unknown ``backend``, ``nccl`` without CUDA, or no torchrun environment (``RANK``,
            ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``): the message names the launch command.
    """
    if is_distributed():
        return True
    backend = distributed_backend() if backend is None else str(backend)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "nccl" and not torch.cuda.is_available():
        raise ValueError("backend 'nccl' needs CUDA; use 'gloo' on CPU (medgen_monai.engines.distributed_backend())")
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"init_distributed: no {missing} in the environment; launch with "
            "`python -m torch.distributed.run --nproc_per_node N -m monai.bundle run --config_file "
            "\"[..., 'configs/multi_gpu_train.json']\"` (configs/multi_gpu_train.json is for torchrun)"
        )
    device = distributed_device() if device is None else torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend)
    return True


def destroy_distributed() -> None:
    """Destroy the default process group when there is one (a config's ``finalize``)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if is_distributed():
        dist.barrier()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for ``rank``'s own draws, derived from a ``seed`` every rank shares (distinct per rank)."""
    return (int(seed) + 0x9E3779B97F4A7C15 * int(rank)) % 2**62


def _comm_device(tensors: Sequence[torch.Tensor] = ()) -> torch.device:
    """Where collective buffers live: the current CUDA device for NCCL, else the tensors' device (or the CPU)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return tensors[0].device if tensors else torch.device("cpu")


def _buckets(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Group ``tensors`` by dtype and device into buckets of at most :data:`_BUCKET_BYTES` (in order)."""
    groups: dict[tuple[torch.dtype, torch.device], list[list[torch.Tensor]]] = {}
    for tensor in tensors:
        buckets = groups.setdefault((tensor.dtype, tensor.device), [[]])
        size = sum(t.numel() * t.element_size() for t in buckets[-1])
        if buckets[-1] and size + tensor.numel() * tensor.element_size() > _BUCKET_BYTES:
            buckets.append([])
        buckets[-1].append(tensor)
    return [bucket for buckets in groups.values() for bucket in buckets]


def _coalesced(tensors: Sequence[torch.Tensor], operation: str) -> None:
    """All-reduce (``"average"``) or broadcast from rank 0 (``"broadcast"``) ``tensors`` in place, a bucket at a
    time."""
    for bucket in _buckets(tensors):
        flat = torch.cat([t.detach().reshape(-1) for t in bucket]).to(_comm_device(bucket))
        if operation == "average":
            dist.all_reduce(flat)
            flat /= dist.get_world_size()
        else:
            dist.broadcast(flat, src=0)
        for tensor, part in zip(bucket, flat.split([t.numel() for t in bucket])):
            tensor.detach().copy_(part.view_as(tensor))


def average_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over the ranks (what DDP does during ``backward``).

    A parameter that has a gradient on some ranks only (a branch one rank's shard did not use) gets a zero
    gradient on the others before averaging, as DDP with ``find_unused_parameters``; one without a gradient on
    any rank keeps ``None`` (the optimiser skips it, as in a single process). No-op when not distributed.
    """
    params = [p for p in parameters if p.requires_grad]
    if not is_distributed() or get_world_size() == 1 or not params:
        return
    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=_comm_device(params))
    dist.all_reduce(present)
    grads = []
    for param, count in zip(params, present.tolist()):
        if count and param.grad is None:
            param.grad = torch.zeros_like(param)
        if count:
            grads.append(param.grad)
    _coalesced(grads, "average")


def broadcast_modules(modules: Iterable[nn.Module | None]) -> None:
    """Give every rank rank 0's parameters and buffers of ``modules`` (``None`` entries are skipped)."""
    if not is_distributed() or get_world_size() == 1:
        return
    tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
    if tensors:
        _coalesced(tensors, "broadcast")


def broadcast_buffers(modules: Iterable[nn.Module | None]) -> None:
    """Give every rank rank 0's buffers of ``modules`` (batch-norm running statistics), as DDP's
    ``broadcast_buffers``."""
    if not is_distributed() or get_world_size() == 1:
        return
    tensors = [t for m in modules if m is not None for t in m.buffers()]
    if tensors:
        _coalesced(tensors, "broadcast")


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` (the same shape on each) concatenated along dim 0 in rank order; the identity when
    not distributed."""
    if not is_distributed() or get_world_size() == 1:
        return tensor
    local = tensor.detach().contiguous().to(_comm_device([tensor]))
    parts = [torch.empty_like(local) for _ in range(get_world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts).to(tensor.device)


def average_scalars(values: Mapping[str, float | torch.Tensor]) -> dict[str, float]:
    """The mean over the ranks of each named scalar, over the ranks that have it (a term can be missing on a rank:
    CCELLA's report-class loss when the rank's share of a batch has no labelled report); plain floats when not
    distributed. Every rank gets every name, in first-seen rank order."""
    plain = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in values.items()}
    if not is_distributed() or get_world_size() == 1:
        return plain
    every: list[list[str]] = [[] for _ in range(get_world_size())]
    dist.all_gather_object(every, list(plain))
    names = list(dict.fromkeys(name for names in every for name in names))
    if not names:
        return {}
    sums = torch.tensor(
        [[plain.get(k, 0.0), float(k in plain)] for k in names], dtype=torch.float64, device=_comm_device()
    )
    dist.all_reduce(sums)
    return {k: float(total / count) for k, (total, count) in zip(names, sums.tolist())}
