"""Where tensors live: ``device="auto" | "cpu" | "cuda" | "cuda:<i>"``, validated once.

``auto`` is the first CUDA device when one is visible, else the CPU.  Mixed precision
(``bf16``: ``torch.autocast`` with bfloat16) and ``channels_last`` are training options
that pay on a GPU; on the CPU they are accepted and do nothing, so one preset runs on both.
"""
from __future__ import annotations

import contextlib
import os
import re

import torch
import torch.nn as nn

from .errors import BadInput

DEVICE_SPELLINGS = "auto, cpu, cuda or cuda:<index>"


def check_device_spelling(spec) -> str:
    """``spec`` if it is spelled ``auto``, ``cpu``, ``cuda`` or ``cuda:<i>`` (available or not)."""
    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", spec):
        raise BadInput(f"device {spec!r} is not one of {DEVICE_SPELLINGS}")
    return spec


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The :class:`torch.device` that ``spec`` names; an error if it is not available here."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec is None or check_device_spelling(spec) == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise BadInput(f"device {spec!r}: no CUDA device is visible here (torch {torch.__version__}); "
                           "use device 'cpu' or 'auto'")
        index = int(spec.split(":")[1]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise BadInput(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible; "
                           f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: one GPU per process, GPU LOCAL_RANK
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(spec)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of ``model``'s first parameter (float32 for a model without parameters)."""
    for p in model.parameters():
        return p.dtype
    return torch.float32


def autocast(device: torch.device, bf16: bool):
    """bfloat16 autocast on CUDA when ``bf16``; a no-op otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False,
              dtype: torch.dtype | None = None) -> torch.Tensor:
    """``x`` on ``device`` (asynchronously from pinned memory), in channels-last layout if asked;
    floating ``x`` cast to ``dtype`` if given (a float64 model gets float64 images)."""
    if x.device != device:
        x = x.to(device, non_blocking=True)
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        x = x.to(dtype)
    if channels_last and x.dim() == 4 and device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return x
