"""Data-parallel training under ``torchrun`` (``DistributedDataParallel``).

``torchrun --nproc_per_node N -m qrepro train ...`` (or ``... -m qrepro study --stages base``)
starts N processes; :func:`init_from_env` joins them into one process group (NCCL on GPUs,
gloo on the CPU), one GPU per process (``LOCAL_RANK``).  What each piece does:

* **Batches.** ``batch_size`` stays the *global* batch: each rank takes its contiguous
  ``batch_size / N`` slice of every global batch (:func:`shard_loader`), the in-memory loader
  with the same order and augmentation draws as one process would make, the ``DataLoader``
  path through a ``DistributedSampler``.  So N processes follow the same optimisation path as
  one process on the same global batch (checked in ``tests/test_distributed.py``).
* **BatchNorm** statistics are computed over the global batch, not per rank
  (:func:`convert_batchnorm`): ``torch.nn.SyncBatchNorm`` on GPUs, :class:`GlobalBatchNorm2d`
  on the CPU, where torch's SyncBatchNorm does not run.  Per-rank statistics would make the
  result depend on N.
* **Writes.** Only rank 0 writes checkpoints, training state, the manifest and logs
  (:func:`is_main`); the other ranks' standard output is silenced.  Checkpoints record the
  world size they were trained with.
* **No hang.** A collective operation (a gradient all-reduce, a barrier) waits at most
  ``QREPRO_COLLECTIVE_TIMEOUT`` seconds (default 600: longer than rank 0 alone spends on an
  epoch's evaluation and checkpoint) for the other ranks; then the run stops with one line saying
  that another process is hung or gone (:func:`explain_failure`), instead of torch's 30 minutes.
"""
from __future__ import annotations

import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .data import TensorLoader
from .errors import BadInput


COLLECTIVE_TIMEOUT = 600.0  # seconds; QREPRO_COLLECTIVE_TIMEOUT overrides it


def collective_timeout() -> float:
    """Seconds a collective waits for the other ranks: ``$QREPRO_COLLECTIVE_TIMEOUT`` or the default."""
    value = os.environ.get("QREPRO_COLLECTIVE_TIMEOUT")
    if value is None:
        return COLLECTIVE_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise BadInput(f"QREPRO_COLLECTIVE_TIMEOUT={value!r}: give a positive number of seconds (default "
                       f"{COLLECTIVE_TIMEOUT:g})")
    return seconds


def explain_failure(err: BaseException) -> str | None:
    """One line for a collective that timed out or lost its peers (else None): the cause and the setting."""
    text = str(err).lower()
    if not (active() or launched()) or not any(s in text for s in ("timed out", "timeout", "connection closed",
                                                                   "connection reset", "broken pipe")):
        return None
    return (f"a collective operation across the {world_size()} torchrun processes failed ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:160]}): another process is hung or gone (its log says why); a collective "
            f"waits {collective_timeout():g} s (QREPRO_COLLECTIVE_TIMEOUT sets it); rerun to resume from the last epoch")


def launched() -> bool:
    """Started by torchrun (or another launcher setting ``WORLD_SIZE``) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def barrier():
    if active():
        dist.barrier()


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes (idempotent); False when not launched by torchrun.
    On CUDA each process takes GPU ``LOCAL_RANK``; ranks other than 0 print nothing."""
    if not launched() or active():
        return active()
    cuda = torch.cuda.is_available() and not str(device).startswith("cpu")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise BadInput(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) here: start at most "
                           "one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=timedelta(seconds=collective_timeout()))
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of the process)
    return True


def backend() -> str | None:
    return dist.get_backend() if active() else None


def describe() -> dict:
    """What a checkpoint records about how it was trained."""
    return {"world_size": world_size(), "backend": backend(), "batch_norm": "global" if active() else "local"}


# --------------------------------------------------------------------------- BatchNorm over the global batch
class _SumOverRanks(torch.autograd.Function):
    """``sum_r t_r`` on every rank; the gradient of each rank's input is the sum of the ranks'
    output gradients (every rank's loss depends on every rank's input through the sum)."""

    @staticmethod
    def forward(ctx, t, group):
        ctx.group = group
        t = t.clone()
        dist.all_reduce(t, group=group)
        return t

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are those of the global batch, summed over the ranks with
    a differentiable all-reduce (so gradients flow back across ranks, as in ``SyncBatchNorm``).
    Used on the CPU (gloo); in eval mode, or in one process, it is ``nn.BatchNorm2d``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        dims = (0, 2, 3)
        group = _batchnorm_group()
        count_local = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        total = _SumOverRanks.apply(torch.cat([x.sum(dims), count_local]), group)
        count = total[-1]
        mean = total[:-1] / count
        centred = x - mean.view(1, -1, 1, 1)
        var = _SumOverRanks.apply((centred * centred).sum(dims), group) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * (count / (count - 1)), alpha=m)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


_BN_GROUP = None


def _batchnorm_group():
    """A process group of its own for BatchNorm's all-reduces, so that they never interleave with
    the gradient all-reduces DDP issues on the default group during the backward pass."""
    global _BN_GROUP
    if _BN_GROUP is None:
        _BN_GROUP = dist.new_group(backend=dist.get_backend())
    return _BN_GROUP


def _swap_batchnorm(model: nn.Module, cls) -> nn.Module:
    """Every BatchNorm of ``model`` made a ``cls`` in place: the same module objects, parameters and
    buffers (an optimizer built before keeps updating them), only the forward changes."""
    for module in model.modules():
        if type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm, GlobalBatchNorm2d):
            module.__class__ = cls
            if cls is nn.SyncBatchNorm:
                module.process_group = None
    return model


def convert_batchnorm(model: nn.Module, device) -> nn.Module:
    """Every BatchNorm of ``model`` computing global-batch statistics (in place): torch's
    ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm2d` elsewhere."""
    return _swap_batchnorm(model, nn.SyncBatchNorm if torch.device(device).type == "cuda" else GlobalBatchNorm2d)


def revert_batchnorm(model: nn.Module) -> nn.Module:
    """Plain ``nn.BatchNorm2d`` again (same state), as checkpoints and pruning expect."""
    return _swap_batchnorm(model, nn.BatchNorm2d)


# --------------------------------------------------------------------------- data
def launch_rank() -> int:
    """This process's rank as the launcher set it (``RANK``; 0 without a launcher), known before
    any process group exists: for work that must happen once, such as reporting a bad input."""
    return int(os.environ.get("RANK", "0"))


def shard_loader(loader, seed: int = 0):
    """This rank's part of every global batch of ``loader``, its order and augmentation drawn from
    ``seed`` (the in-memory loader: a reseeded copy; a ``DataLoader`` in one process: unchanged, its
    order comes from torch's global RNG, which ``train`` seeds)."""
    if isinstance(loader, TensorLoader):
        loader = loader.reseeded(seed)
    if not active():
        return loader
    n = world_size()
    if loader.batch_size % n:
        raise BadInput(f"batch_size {loader.batch_size} is the global batch and must divide evenly over the "
                       f"{n} processes; choose a multiple of {n}")
    if isinstance(loader, TensorLoader):
        return loader.shard(rank(), n)

    sampler = DistributedSampler(loader.dataset, num_replicas=n, rank=rank(), shuffle=True, seed=seed, drop_last=True)
    return DataLoader(loader.dataset, batch_size=loader.batch_size // n, sampler=sampler, drop_last=True,
                      num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                      persistent_workers=loader.num_workers > 0)


def set_epoch(loader, epoch: int):
    """Start ``epoch`` of ``loader``: the in-memory loader's order counter, or the sampler's seed."""
    if hasattr(loader, "epoch") and not hasattr(loader, "sampler"):
        loader.epoch = epoch
    sampler = getattr(loader, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
