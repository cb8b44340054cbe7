"""Self-describing checkpoints: weights plus the architecture, quantization, config,
metrics and package versions that made them (nanoGPT's checkpoint dict).

Loading rebuilds the model from its recorded architecture and quantization, resizes
the layers a pruning made narrower (channel counts are read off the stored weights),
and loads with ``torch.load(weights_only=True)``: no pickled code is ever run.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch
import torch.nn as nn

from .models import build_model
from .quantize import conv_from, is_quantized, linear_from, make_spec, quantize_model

FORMAT = "qrepro-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def environment_info() -> dict:
    """Versions and device, recorded beside every result."""
    import importlib.metadata as md

    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("torch", "torchvision", "botorch", "gpytorch", "numpy", "pandas", "qrepro"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    versions["device"] = "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    return versions


def model_description(model: nn.Module) -> dict:
    arch = getattr(model, "arch", None)
    if arch is None:
        raise ValueError("the model has no .arch record; build it with qrepro.models.build_model(name, ...)")
    return {"arch": arch, "quant": getattr(model, "quant_config", None)}


def save_checkpoint(path: str | Path, model: nn.Module, config: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``model`` and what describes it to ``path`` atomically (a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, **model_description(model),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "pruned": getattr(model, "pruned", None),
        "config": config or {}, "metrics": metrics or {}, "extra": extra or {}, "versions": environment_info(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def rebuild(arch: dict, quant: dict | None) -> nn.Module:
    """The unpruned model an ``arch`` / ``quant`` record describes."""
    model = build_model(arch["name"], **arch.get("kwargs", {}))
    if quant:
        model = quantize_model(model, quant["scheme"], w_bits=quant["w_bits"], a_bits=quant["a_bits"],
                               scaling=quant["scaling"], replace_relu=quant["replace_relu"], inplace=True)
    return model


def resize_to_state_dict(model: nn.Module, state_dict: dict) -> nn.Module:
    """Narrow the convolutions, linear layers and BatchNorms whose stored weights are smaller
    (a pruned model), in place.  Layers can only shrink: a wider tensor is an error."""
    for name, module in list(model.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state_dict:
            continue
        shape = tuple(state_dict[key].shape)
        if shape == tuple(module.weight.shape):
            continue
        if any(s > t for s, t in zip(shape, module.weight.shape)) or len(shape) != module.weight.dim():
            raise ValueError(f"layer {name}: stored weight {shape} is not a narrowing of {tuple(module.weight.shape)}")
        spec = module.spec if is_quantized(module) else None
        if isinstance(module, nn.Conv2d):
            new = conv_from(module, spec, in_channels=shape[1] * module.groups, out_channels=shape[0])
        elif isinstance(module, nn.Linear):
            new = linear_from(module, spec, in_features=shape[1])
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            new = type(module)(shape[0], eps=module.eps, momentum=module.momentum, affine=module.affine)
        else:
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def load_checkpoint(path: str | Path, expected_arch: str | None = None, expected_quant: dict | None = None,
                    map_location="cpu") -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(model, payload)``.

    Raises :class:`CheckpointError` for a missing, truncated or corrupt file, a file that
    is not a qrepro checkpoint, or one whose architecture or quantization differs from
    ``expected_arch`` / ``expected_quant`` (keys compared: those given).
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train it first (python -m qrepro train ...)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {err}); the file is truncated, corrupt or "
            "not a torch file: delete it and re-create it with the command that made it") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a qrepro checkpoint (no '{FORMAT}' header)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {payload.get('format_version')}, this qrepro reads "
                              f"{FORMAT_VERSION}; re-create it with this version")
    arch, quant = payload["arch"], payload.get("quant")
    if expected_arch is not None and arch["name"] != expected_arch:
        raise CheckpointError(f"{path} holds a {arch['name']} but a {expected_arch} was expected; "
                              "pass the checkpoint of the right architecture")
    if expected_quant:
        have = quant or {"scheme": None}
        diff = {k: (v, have.get(k)) for k, v in expected_quant.items() if have.get(k) != v}
        if diff:
            raise CheckpointError(f"{path}: quantization differs from what was expected "
                                  f"(key: (expected, stored)) {diff}")
    try:
        model = rebuild(arch, quant)
        if payload.get("pruned"):
            resize_to_state_dict(model, payload["state_dict"])
            model.pruned = payload["pruned"]
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: its weights do not match the architecture it records ({arch}): {err}") \
            from err
    if quant:
        make_spec(quant["scheme"], quant["w_bits"], quant["a_bits"], quant["scaling"])  # validates the record
    model.eval()
    return model, payload
