"""The search objective for a trained quantized network: prune at the candidate ratios,
re-estimate BatchNorm on a few training batches (no gradient step), optionally fine-tune
a few steps, and return the top-1 accuracy on the held-out validation split.

:class:`PruneObjective` is a picklable callable, so ``search.search_ratios`` can send it to
worker processes; it runs on the device of the model it is given (or ``device``), with the
in-memory loader or a torchvision ``DataLoader`` alike; every choice it makes is in :meth:`PruneObjective.describe`, which goes
into the search journal's key.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .data import loader_size, subset_loader
from .device import model_device, resolve_device, to_device
from .precision import Candidate, bit_units, set_bits, unit_bits
from .prune import prune, prune_groups, recalibrate_batchnorm
from .train import TrainConfig, evaluate, make_optimizer


@dataclass
class EvaluationSettings:
    """What one evaluation of a pruned candidate uses: the one default of each field, for
    :class:`PruneObjective`, the command line's search and the study's presets alike."""

    bn_batches: int = 20  # batches of 128 training images for BatchNorm re-estimation
    val_images: int | None = None  # validation images the accuracy is measured on (None: all)

    def __post_init__(self):
        if self.bn_batches < 1 or (self.val_images is not None and self.val_images < 1):
            raise ValueError(f"bn_batches and val_images must be at least 1, got {self.bn_batches}, {self.val_images}")


def finetune(model, loader, steps: int, lr: float = 1e-4, seed: int = 0):
    """``steps`` Adam steps on ``loader`` (cycled, fixed seed); returns the model in eval mode."""
    torch.manual_seed(seed)
    opt = make_optimizer(model, TrainConfig(optimizer="adam", lr=lr, weight_decay=0.0))
    model.train()
    device = model_device(model)
    done = 0
    while done < steps:
        for x, y in loader:
            loss = F.cross_entropy(model(to_device(x, device)), to_device(y, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    model.eval()
    return model


class PruneObjective:
    """``objective({layer: ratio}) -> validation accuracy (percent)`` of the pruned model."""

    def __init__(self, model, splits, criterion: str = "redundancy", bn_batches: int = EvaluationSettings.bn_batches,
                 val_images: int | None = EvaluationSettings.val_images, finetune_steps: int = 0,
                 finetune_lr: float = 1e-4, criterion_options: dict | None = None,
                 mode: str = "block", batch_size: int = 256, seed: int = 0, device=None):
        self.model = copy.deepcopy(model).eval()
        prune_groups(self.model, mode)  # a model the dependency graph cannot prune is refused here, not at its first call
        if device is not None:  # else the model's own device
            self.model.to(resolve_device(device))
        self.criterion, self.bn_batches, self.mode = criterion, bn_batches, mode
        self.finetune_steps, self.finetune_lr, self.seed = finetune_steps, finetune_lr, seed
        self.criterion_options = dict(criterion_options or {})
        # fixed batches: every candidate sees the same BatchNorm and validation images
        self.bn_loader = subset_loader(splits.train, bn_batches * 128, batch_size=128)
        self.ft_loader = subset_loader(splits.train, max(1, finetune_steps) * 128, batch_size=128, augment=True)
        self.val = subset_loader(splits.val, val_images, batch_size=batch_size)
        self.val_images = loader_size(self.val)
        self._units = {}  # searched layers -> the quantized layers each one's bit-width sets

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def to(self, device) -> "PruneObjective":
        """Move the model and the in-memory batches to ``device`` (a Dask worker's own GPU); in place."""
        device = torch.device(device)
        self.model.to(device)
        for name in ("bn_loader", "ft_loader", "val"):
            loader = getattr(self, name)
            if hasattr(loader, "to") and not isinstance(loader, torch.utils.data.DataLoader):
                setattr(self, name, loader.to(device))
        return self

    def describe(self) -> dict:
        return {"criterion": self.criterion, "criterion_options": self.criterion_options,
                "bn_batches": self.bn_batches, "val_images": self.val_images, "finetune_steps": self.finetune_steps,
                "finetune_lr": self.finetune_lr, "mode": self.mode, "seed": self.seed}

    def at_bits(self, bits: dict[str, int]) -> torch.nn.Module:
        """A copy of the model with each searched unit (:func:`qrepro.precision.bit_units`) at its bit-width."""
        layers = tuple(bits)
        if layers not in self._units:
            self._units[layers] = bit_units(self.model, layers, self.mode)
        return set_bits(copy.deepcopy(self.model), unit_bits(self._units[layers], bits))

    def prune(self, ratios) -> torch.nn.Module:
        """``ratios``: ``{layer: ratio}``, or a :class:`qrepro.precision.Candidate` (ratios and bit-widths)."""
        options = dict(self.criterion_options)
        if self.criterion == "random":
            options.setdefault("seed", self.seed)
        model = self.model
        if isinstance(ratios, Candidate):
            model, ratios = self.at_bits(ratios.bits), ratios.ratios
        pruned = prune(model, ratios, self.criterion, mode=self.mode, criterion_options=options)
        if self.finetune_steps:
            recalibrate_batchnorm(pruned, self.bn_loader, self.bn_batches)
            finetune(pruned, self.ft_loader, self.finetune_steps, self.finetune_lr, self.seed)
        return recalibrate_batchnorm(pruned, self.bn_loader, self.bn_batches)

    def __call__(self, ratios) -> float:
        with torch.no_grad() if not self.finetune_steps else torch.enable_grad():
            pruned = self.prune(ratios)
        return evaluate(pruned, self.val)["acc"]
