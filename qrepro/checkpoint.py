"""Self-describing checkpoints: weights plus the architecture, quantization, config,
metrics and package versions that made them (nanoGPT's checkpoint dict).

Loading rebuilds the model from its recorded architecture (a registered name, or the import
path of an ``nn.Module`` class or of a function annotated to return one: that module is
imported, so load only checkpoints whose code you would run) and quantization, removes the
channels a pruning removed (the kept indices are recorded), and loads with
``torch.load(weights_only=True)``: no pickled code is ever run.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import platform
import sys
from pathlib import Path

import torch
import torch.nn as nn

from .cache import record_digest, write_bytes_atomic
from .errors import TRUST_UNVERIFIED, BadInput
from .models import build_model
from .precision import set_bits
from .prune import apply_kept
from .quantize import make_spec, quantize_model

FORMAT = "qrepro-checkpoint"
FORMAT_VERSION = 2  # 2: record_sha256 covers everything but the weights (1: the weights' checksum only)
UNVERIFIED = f"pass {TRUST_UNVERIFIED} to load it anyway, or make it again with the command that made it"


class CheckpointError(BadInput):
    """A checkpoint that cannot be used; the message names the file and what to do."""


def environment_info() -> dict:
    """Versions and device, recorded beside every result."""
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
        raise BadInput("the model has no .arch record, so a checkpoint could not rebuild it: make it with "
                       "qrepro.models.build_model('package.module:builder', **kwargs) (an nn.Module class or a function "
                       "annotated to return one, e.g. 'torchvision.models:mobilenet_v2'), or one of "
                       "qrepro.models.ARCHITECTURES")
    return {"arch": arch, "quant": getattr(model, "quant_config", None)}


def save_checkpoint(path: str | Path, model: nn.Module, config: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None) -> Path:
    """Write ``model`` and what describes it to ``path`` atomically (a crash leaves no half file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    records = {"format": FORMAT, "format_version": FORMAT_VERSION, **model_description(model),
               "pruned": getattr(model, "pruned", None), "config": config or {}, "metrics": metrics or {},
               "extra": extra or {}, "versions": environment_info()}
    payload = {**records, "record_sha256": record_digest(records), "state_dict": state,
               "state_sha256": state_digest(state)}
    buffer = io.BytesIO()  # serialized in memory, so a failed write is the one path of cache.write_bytes_atomic
    torch.save(payload, buffer)
    write_bytes_atomic(path, buffer.getvalue())
    return path


def state_digest(state: dict) -> str:
    """SHA-256 over a state dict's names, shapes, dtypes and bytes (torch's zip format does not
    check tensor data: a checkpoint with flipped bytes would otherwise load)."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify_payload(path, payload: dict, trust_unverified: bool = False):
    """Check a checkpoint payload's format version and both checksums; a missing one (an older
    format, or a removed field) is refused unless ``trust_unverified``."""
    version = payload.get("format_version")
    if version not in (1, FORMAT_VERSION):
        raise CheckpointError(f"{path} has checkpoint format {version}, this qrepro reads 1 and {FORMAT_VERSION}; "
                              "re-create it with this version")
    missing = [name for name in ("state_sha256", "record_sha256") if name not in payload]
    if missing and not trust_unverified:
        raise CheckpointError(f"checkpoint {path} (format {version}) has no {' or '.join(missing)}, so it cannot be "
                              f"verified; {UNVERIFIED}")
    if "state_sha256" in payload and state_digest(payload["state_dict"]) != payload["state_sha256"]:
        raise CheckpointError(f"checkpoint {path}: its weights do not match their checksum (the file is corrupt or "
                              "was edited); re-create it with the command that made it")
    if "record_sha256" in payload:
        records = {k: v for k, v in payload.items() if k not in ("state_dict", "state_sha256", "record_sha256")}
        if record_digest(records) != payload["record_sha256"]:
            raise CheckpointError(f"checkpoint {path}: its records (architecture, config, metrics) do not match "
                                  "their checksum (the file was edited); re-create it with the command that made it")


def rebuild(arch: dict, quant: dict | None, pruned: dict | None = None) -> nn.Module:
    """The model an ``arch`` / ``quant`` record describes, narrowed as the ``pruned`` record
    (mode, scale convention, kept channels per group) says, with ``prune.apply_kept``."""
    model = build_model(arch["name"], **arch.get("kwargs", {}))
    if quant:
        model = quantize_model(model, quant["scheme"], w_bits=quant["w_bits"], a_bits=quant["a_bits"],
                               scaling=quant["scaling"], replace_relu=quant["replace_relu"], inplace=True)
        set_bits(model, quant.get("layer_bits", {}))
    if pruned:
        apply_kept(model, pruned["kept"], pruned["mode"], pruned["scales"])
    return model


def load_checkpoint(path: str | Path, expected_arch: str | None = None, expected_quant: dict | None = None,
                    map_location="cpu", trust_unverified: bool = False) -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_checkpoint`; returns ``(model, payload)``.

    Raises :class:`CheckpointError` for a missing, truncated or corrupt file, a file that
    is not a qrepro checkpoint, one whose weights or records do not match their checksums, one
    without them (an older format, or a removed field) unless ``trust_unverified`` (for a file
    verified another way, such as by a results folder's manifest), or one whose architecture or
    quantization differs from ``expected_arch`` / ``expected_quant`` (keys compared: those given).
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
    verify_payload(path, payload, trust_unverified)
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
        model = rebuild(arch, quant, payload.get("pruned"))
        floating = [t.dtype for t in payload["state_dict"].values() if t.is_floating_point()]
        model.to(floating[0] if floating else torch.float32)  # a float64 model loads as float64
        model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: its weights do not match the architecture it records ({arch}): {err}") \
            from err
    if quant:
        make_spec(quant["scheme"], quant["w_bits"], quant["a_bits"], quant["scaling"])  # validates the record
    model.eval()
    return model, payload
