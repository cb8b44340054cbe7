"""Training and evaluation, seeded, with a progress bar.

Defaults follow METHOD.md: SGD with momentum and a cosine schedule for full precision;
quantized networks start from the full-precision checkpoint and train with Adam
(lr 1e-3, cosine decay) and no weight decay on the latent quantized weights, the
usual recipe for binary networks.  ``TrainConfig`` holds every choice.
"""
from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from .cache import write_bytes_atomic
from .checkpoint import load_checkpoint, save_checkpoint
from .data import DATASETS, find_fashion_mnist, load_splits, loader_size
from .device import autocast, model_device, model_dtype, resolve_device, to_device
from .distributed import (
    active,
    barrier,
    convert_batchnorm,
    describe,
    init_from_env,
    is_main,
    revert_batchnorm,
    set_epoch,
    shard_loader,
    world_size,
)
from .errors import BadInput, check_input_file, check_output_file
from .models import ARCHITECTURES, build_model, resolve_builder
from .precision import draw_bits, layer_bits, set_bits
from .prune import recalibrate_batchnorm
from .quantize import SCALINGS, SCHEMES, is_quantized, make_spec, quantize_model
from .validation import check_field_types

OPTIMIZERS = ("sgd", "adam")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
BN_BATCHES = 20  # any-precision training: batches that re-estimate BatchNorm for the config's bit-widths after each epoch


@dataclass
class TrainConfig:
    """Everything that determines a training run (and its cache key)."""

    arch: str = field(default="resnet20", metadata={"choices": ARCHITECTURES, "help": "or package.module:builder"})
    dataset: str = field(default="fashion-mnist", metadata={"choices": DATASETS})
    scheme: str | None = field(default=None, metadata={"choices": SCHEMES, "help": "leave out: full precision"})
    w_bits: int | None = None
    a_bits: int | None = None
    scaling: str = field(default="filter", metadata={"choices": SCALINGS})
    epochs: float = 3
    batch_size: int = 128
    optimizer: str = field(default="sgd", metadata={"choices": OPTIMIZERS})
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    seed: int = 0
    init_from: str | None = None  # full-precision checkpoint a quantized model starts from
    val_size: int = 5000
    limit: int | None = None  # train on this many images only (smoke runs)
    arch_kwargs: dict = field(default_factory=dict)
    bf16: bool = False  # bfloat16 autocast (CUDA only; ignored on the CPU)
    channels_last: bool = False  # channels-last memory layout (CUDA only)
    compile: bool = False  # torch.compile the training step's model (pays after about 1.5 epochs on 2 CPU cores)
    dtype: str = field(default="float32", metadata={"choices": DTYPES, "help": "float64: exact comparisons, e.g. of "
                                                                               "1 and 2 torchrun processes"})
    # any-precision training (qrepro.precision): every step, each quantized layer at a bit-width drawn from these
    bit_choices: list[int] | None = field(default=None, metadata={"help": "DoReFa only, e.g. 1 2 4 8"})

    def __post_init__(self):
        def bad(what):
            raise BadInput(what)

        check_field_types(self)

        if self.optimizer not in OPTIMIZERS:
            bad(f"optimizer: unknown {self.optimizer!r}; accepted values: {', '.join(OPTIMIZERS)}")
        try:
            resolve_builder(self.arch)  # a registered name or an importable builder
        except BadInput as err:
            bad(f"arch: {err}")
        if self.dataset not in DATASETS:
            bad(f"dataset: unknown {self.dataset!r}; accepted values: {', '.join(DATASETS)}")
        if self.dtype not in DTYPES:
            bad(f"dtype: unknown {self.dtype!r}; accepted values: {', '.join(DTYPES)}")
        if self.scaling not in SCALINGS:
            bad(f"scaling: unknown {self.scaling!r}; accepted values: {', '.join(SCALINGS)}")
        if self.scheme is None:
            if self.w_bits is not None or self.a_bits is not None:
                bad("w_bits / a_bits need a quantization scheme: add scheme = 'dorefa' (or 'bnn')")
        elif self.scheme not in SCHEMES:
            bad(f"scheme: unknown {self.scheme!r}; accepted values: {', '.join(SCHEMES)} (leave it out for "
                "full precision)")
        else:
            spec = make_spec(self.scheme, self.w_bits, self.a_bits, self.scaling)  # bits in range for the scheme
        if self.bit_choices is not None:
            if self.scheme != "dorefa" or not self.bit_choices or self.compile or spec.w_bits != spec.a_bits:
                bad("bit_choices (any-precision training) needs scheme = 'dorefa', at least one bit-width, w_bits = "
                    "a_bits, and compile = false (a changed bit-width would recompile the step)")
            for b in self.bit_choices:
                make_spec("dorefa", b, b)
        checks = [("epochs", self.epochs > 0, "a positive number"), ("lr", self.lr > 0, "a positive number"),
                  ("batch_size", self.batch_size >= 1, "at least 1"),
                  ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
                  ("weight_decay", self.weight_decay >= 0, "0 or more"),
                  ("warmup_epochs", 0 <= self.warmup_epochs <= self.epochs, "in [0, epochs]"),
                  ("val_size", self.val_size >= 0, "0 or more"),
                  ("limit", self.limit is None or self.limit >= 1, "at least 1 (or left out)")]
        for name, ok, what in checks:
            if not ok:
                bad(f"{name} must be {what}, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """The fields, for cache keys and checkpoints.  Options added after the first study
        (``bf16``, ``channels_last``, ``compile``, ``dtype``, ``bit_choices``) are left out at their default, which
        is the earlier behaviour, so the keys of artifacts made before them stay valid."""
        d = asdict(self)
        for name in ("bf16", "channels_last", "compile", "dtype", "bit_choices"):
            if d[name] == getattr(TrainConfig, name):
                del d[name]
        return d


def seed_everything(seed: int):
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(False)


@torch.no_grad()
def evaluate(model: nn.Module, loader, max_batches: int | None = None, progress: bool = False) -> dict:
    """Top-1 accuracy (percent) and mean cross-entropy of ``model`` on ``loader``."""
    was_training = model.training
    model.eval()
    correct = total = 0
    loss = 0.0
    device, dtype = model_device(model), model_dtype(model)
    loss_t = torch.zeros((), dtype=torch.float64, device=device)
    correct_t = torch.zeros((), dtype=torch.int64, device=device)
    it = tqdm(loader, desc="eval", leave=False, disable=not progress)
    for i, (x, y) in enumerate(it):
        if max_batches is not None and i >= max_batches:
            break
        x, y = to_device(x, device, dtype=dtype), to_device(y, device)
        out = model(x)
        loss_t += F.cross_entropy(out.float(), y, reduction="sum").double()
        correct_t += (out.argmax(1) == y).sum()
        total += len(y)
    loss, correct = float(loss_t), int(correct_t)  # one synchronisation, not one per batch
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluation loader yielded no batches")
    return {"acc": 100.0 * correct / total, "loss": loss / total, "n": total}


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """No weight decay on latent quantized weights, BatchNorm parameters or biases."""
    decay, no_decay = [], []
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            quantized_weight = is_quantized(module) and pname == "weight"
            (no_decay if quantized_weight or p.dim() <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def train(model: nn.Module, splits, cfg: TrainConfig, progress: bool = True, eval_every_epoch: bool = True,
          max_steps: int | None = None, state_path: str | Path | None = None) -> list[dict]:
    """Train ``model`` in place; returns one record per epoch (loss, accuracies, seconds).

    ``cfg.epochs`` may be fractional (the last epoch stops early); ``max_steps`` caps the
    number of optimizer steps (smoke runs).  Under torchrun the model trains data-parallel
    (:mod:`qrepro.distributed`: each rank its part of every global batch, BatchNorm over the
    global batch) and comes back as the same plain module on every rank.

    ``state_path``: after every epoch rank 0 writes the training state there (model, optimizer,
    schedule, step, history); a run started again with the same ``cfg`` resumes from it, with
    the batches the uninterrupted run would have seen.
    """
    seed_everything(cfg.seed)
    device, dtype = model_device(model), model_dtype(model)
    if cfg.channels_last and device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    loader = shard_loader(splits.train, cfg.seed)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise BadInput(f"a training run needs at least one full batch of {cfg.batch_size} images, and the training "
                       f"split has {loader_size(splits.train)}; lower the batch size (study: --batch-size) or train on "
                       "more images (--limit, or a larger data set)")
    total = max(1, int(round(cfg.epochs * steps_per_epoch)))
    if max_steps is not None:
        total = min(total, max_steps)
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, total, int(cfg.warmup_epochs * steps_per_epoch)))
    history, step, epoch = [], 0, 0
    resumed = _load_state(state_path, cfg, total, model, opt, sched)
    if resumed:
        step, epoch, history = resumed["step"], resumed["epoch"], resumed["history"]
        if progress and is_main():
            tqdm.write(f"resumed from {state_path} at epoch {epoch}, step {step} of {total}")
    net = model
    if active():
        net = DistributedDataParallel(convert_batchnorm(model, device),
                                      device_ids=[device.index] if device.type == "cuda" else None)
        # the 1x1 shortcut convolutions' gradients come with other strides than DDP's buckets: a copy, no error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    if cfg.compile:  # the quantized layers have no graph break (tests/test_quantize.py); minutes to compile
        net = torch.compile(net)
    try:
        while step < total:
            set_epoch(loader, epoch)
            net.train()
            t0, seen = time.time(), 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{math.ceil(total / steps_per_epoch)}", leave=False,
                       disable=not progress or not is_main(), total=min(steps_per_epoch, total - step))
            loss_t = torch.zeros((), dtype=torch.float64, device=device)
            correct_t = torch.zeros((), dtype=torch.int64, device=device)
            for x, y in bar:
                if cfg.bit_choices:  # seeded by the step, so a resumed run draws what the uninterrupted one did
                    draw_bits(model, cfg.bit_choices, torch.Generator().manual_seed(cfg.seed * 1_000_003 + step))
                x, y = to_device(x, device, cfg.channels_last, dtype), to_device(y, device)
                with autocast(device, cfg.bf16):
                    out = net(x)
                loss = F.cross_entropy(out.float(), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                seen += len(y)
                correct_t += (out.argmax(1) == y).sum()
                loss_t += loss.detach().double() * len(y)
                if step % 25 == 0 or step >= total:  # a host synchronisation every 25 steps, not every step
                    bar.set_postfix(loss=f"{float(loss_t) / seen:.3f}", acc=f"{100 * int(correct_t) / seen:.1f}")
                if step >= total:
                    break
            bar.close()
            if cfg.bit_choices:  # evaluated and saved at the config's bit-widths, BatchNorm statistics for them
                set_bits(model, dict.fromkeys(layer_bits(model), model.quant_config["w_bits"]))
                with torch.no_grad():
                    recalibrate_batchnorm(model, loader, BN_BATCHES)
            loss_sum, correct = float(loss_t), int(correct_t)  # this rank's images (all of them in one process)
            record = {"epoch": epoch + 1, "steps": step, "train_loss": loss_sum / max(1, seen),
                      "train_acc": 100.0 * correct / max(1, seen), "seconds": time.time() - t0,
                      "images_per_s": seen / max(1e-9, time.time() - t0)}
            if eval_every_epoch:
                record["val_acc"] = evaluate(model, splits.val)["acc"]
            history.append(record)
            if progress and is_main():
                tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))
            epoch += 1
            if state_path is not None and step < total:
                _save_state(state_path, cfg, total, model, opt, sched, step, epoch, history)
    finally:
        if active():
            revert_batchnorm(model)
    return history


def _state_key(cfg: TrainConfig, total: int) -> dict:
    return {"config": cfg.to_dict(), "total_steps": total, "world_size": world_size()}


def _save_state(path, cfg, total, model, opt, sched, step, epoch, history):
    """Rank 0 writes the training state atomically (every rank holds the same weights)."""
    if is_main():
        path = Path(path)
        buffer = io.BytesIO()
        torch.save({"key": _state_key(cfg, total), "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "schedule": sched.state_dict(), "step": step, "epoch": epoch, "history": history,
                    "rng": torch.get_rng_state()}, buffer)
        write_bytes_atomic(path, buffer.getvalue())
    barrier()


def _load_state(path, cfg, total, model, opt, sched) -> dict | None:
    """The saved training state at ``path`` if it belongs to this run (same config, steps and world
    size), loaded into ``model``, ``opt`` and ``sched``; None otherwise (a foreign state is left alone)."""
    if path is None or not Path(path).exists():
        return None
    try:
        state = torch.load(path, map_location=model_device(model), weights_only=True)
    except Exception as err:  # a truncated state from a killed write is not resumable
        tqdm.write(f"training state {path} cannot be read ({type(err).__name__}); starting from the beginning")
        return None
    if state.get("key") != _state_key(cfg, total):
        raise BadInput(f"training state {path} belongs to another run (config, length or world size differs); "
                       "move it away to start this one from the beginning")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["schedule"])
    torch.set_rng_state(state["rng"])
    return state


def build_for_training(cfg: TrainConfig, splits, init: nn.Module | None = None) -> nn.Module:
    """The model ``cfg`` describes: built, started from ``init`` (the model of ``cfg.init_from``) if
    given, then quantized."""
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels, **cfg.arch_kwargs}
    model = build_model(cfg.arch, **kwargs)
    if init is not None:
        model.load_state_dict(init.state_dict())
    if cfg.scheme:
        model = quantize_model(model, cfg.scheme, w_bits=cfg.w_bits, a_bits=cfg.a_bits, scaling=cfg.scaling)
    return model.to(DTYPES[cfg.dtype])


def train_model(cfg: TrainConfig, out: str | None = None, data_root=None, progress: bool = True,
                max_steps: int | None = None, device="auto", loader_options: dict | None = None,
                trust_unverified: bool = False):
    """Train the model ``cfg`` describes on ``device``, evaluate it, and write its checkpoint to ``out``.
    ``loader_options``: passed to the dataset's loader (ImageNet: ``image_size``, ``loader_workers``);
    ``trust_unverified``: load an ``init_from`` checkpoint that has no checksums
    (:func:`qrepro.checkpoint.load_checkpoint`)."""
    init_from_env(device)
    device = resolve_device(device)

    if out is not None:  # checks that would otherwise fail after hours of training
        check_output_file(out, "checkpoint --out")
    init = None
    if cfg.init_from:
        check_input_file(cfg.init_from, "init_from checkpoint", "train the full-precision model first")
        init, payload = load_checkpoint(cfg.init_from, expected_arch=cfg.arch, trust_unverified=trust_unverified)
        if payload.get("quant"):
            raise BadInput(f"init_from {cfg.init_from} is a quantized ({payload['quant']['scheme']}) checkpoint; a "
                           "quantized model starts from a full-precision one (train it without --scheme)")
    if cfg.dataset == "fashion-mnist":
        find_fashion_mnist(data_root)

    extra = {k: v for k, v in (loader_options or {}).items() if v is not None}
    splits = load_splits(cfg.dataset, root=data_root, val_size=cfg.val_size, batch_size=cfg.batch_size,
                         seed=0, limit=cfg.limit, **extra) if cfg.dataset != "synthetic" else \
        load_splits("synthetic", batch_size=cfg.batch_size, seed=0)
    splits = splits.to(device)
    seed_everything(cfg.seed)  # the initial weights too: the same config gives the same model
    model = build_for_training(cfg, splits, init).to(device)
    t0 = time.time()
    state = None if out is None else Path(str(out) + ".train-state")
    history = train(model, splits, cfg, progress=progress, max_steps=max_steps, state_path=state)
    metrics = {"val_acc": history[-1].get("val_acc"), "test_acc": evaluate(model, splits.test)["acc"],
               "train_seconds": time.time() - t0, "history": history}
    if out is not None and is_main():
        save_checkpoint(out, model, config=cfg.to_dict(), metrics=metrics, extra={"distributed": describe()})
        state.unlink(missing_ok=True)  # the checkpoint supersedes it
    barrier()
    return model, metrics
