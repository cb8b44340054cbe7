"""The study: every computing stage that the notebooks read, each cached under a key.

Stages (``python -m qrepro study``): base models (full precision, BNN, 2-bit DoReFa),
criteria ablation, ratio searches, final fine-tuning.  Each writes under
``results/`` an artifact whose name carries the hash of the config that made it, with
versions, seeds and device inside; a stage whose artifact exists with a matching key
is skipped, so a killed study resumes where it stopped.
"""
from __future__ import annotations

import copy
from pathlib import Path

from .cache import artifact_path, config_key
from .paths import checkpoints_dir, results_dir
from .train import TrainConfig

BASE_KINDS = ("fp", "bnn", "dorefa")

# Full-scale defaults (Fashion-MNIST, ResNet-20, 2 CPU cores); see README "Protocol".
FULL = {
    "dataset": "fashion-mnist",
    "arch": "resnet20",
    "val_size": 5000,
    "limit": None,
    "base": {
        "fp": dict(epochs=3, optimizer="sgd", lr=0.1, weight_decay=5e-4),
        "bnn": dict(scheme="bnn", epochs=4, optimizer="adam", lr=1e-3, weight_decay=0.0),
        "dorefa": dict(scheme="dorefa", w_bits=2, a_bits=2, epochs=4, optimizer="adam", lr=1e-3, weight_decay=0.0),
    },
}

# A tiny study for CI and the notebooks' smoke mode: minutes on 2 cores.
SMOKE = copy.deepcopy(FULL)
SMOKE.update(limit=1024, val_size=5000)
for _kind in BASE_KINDS:
    SMOKE["base"][_kind]["epochs"] = 1


def study_settings(smoke: bool = False) -> dict:
    return copy.deepcopy(SMOKE if smoke else FULL)


def base_config(kind: str, smoke: bool = False) -> TrainConfig:
    """The training config of base model ``kind`` (``fp``, ``bnn``, ``dorefa``)."""
    if kind not in BASE_KINDS:
        raise ValueError(f"unknown base model {kind!r}; accepted values: {', '.join(BASE_KINDS)}")
    st = study_settings(smoke)
    cfg = TrainConfig(arch=st["arch"], dataset=st["dataset"], val_size=st["val_size"], limit=st["limit"],
                      **st["base"][kind])
    if kind != "fp":
        cfg.init_from = str(base_checkpoint_path("fp", smoke, root=None).relative_to(results_dir(None)))
    return cfg


def base_checkpoint_path(kind: str, smoke: bool = False, root=None) -> Path:
    cfg = base_config(kind, smoke) if kind == "fp" else None
    if cfg is None:
        cfg = base_config(kind, smoke)
    return artifact_path(checkpoints_dir(root), f"base-{kind}", cfg.to_dict(), ".pt")


def train_base(kind: str, smoke: bool = False, root=None, data_root=None, progress: bool = True) -> Path:
    """Train base model ``kind`` unless its checkpoint (same key) is already cached."""
    cfg = base_config(kind, smoke)
    path = artifact_path(checkpoints_dir(root), f"base-{kind}", cfg.to_dict(), ".pt")
    if path.exists():
        print(f"[cached] {path.name}")
        return path
    if cfg.init_from:
        train_base("fp", smoke, root, data_root, progress)
    from .train import train_model

    print(f"[train] {path.name}  (key {config_key(cfg.to_dict())})")
    train_model(cfg, out=str(path), data_root=data_root, progress=progress, results_root=root)
    return path
