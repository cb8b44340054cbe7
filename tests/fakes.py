"""Tiny stand-ins for the paper's data sets, for tests and smoke runs where the real files are absent:
CIFAR-10 in torchvision's format and ImageNet in ImageFolder layout (random images)."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def write_fake_cifar10(root, per_batch: int = 40, test: int = 20, seed: int = 0) -> Path:
    """Random images in torchvision's CIFAR-10 format (``root/cifar-10-batches-py/``), for smoke
    runs and tests where the real data is absent.  torchvision checks the real files' MD5, so a
    reader of these must skip that check (``skip_integrity_check=True``, ``--skip-integrity-check``)."""
    base = Path(root) / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def batch(n):
        return {"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), "labels": list(np.arange(n) % 10)}

    for i in range(1, 6):
        with open(base / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(base / "test_batch", "wb") as f:
        pickle.dump(batch(test), f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    return Path(root)


def write_fake_imagefolder(root, classes=("n01440764", "n01443537", "n01484850"), train: int = 60, val: int = 4,
                           size=(48, 56), seed: int = 0) -> Path:
    """Random JPEGs in ImageNet's ImageFolder layout (``root/{train,val}/<class>/*.JPEG``)."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for cls in classes:
            d = Path(root) / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(d / f"{cls}_{i}.JPEG")
    return Path(root)
