"""Every path the package uses, in one place (notebooks never write a literal path).

``QREPRO_RESULTS`` and ``QREPRO_DATA`` override the defaults, so a smoke study can
write into a temporary folder without touching the committed cache.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("QREPRO_DATA", REPO_ROOT / "data"))
RESULTS_DIR = Path(os.environ.get("QREPRO_RESULTS", REPO_ROOT / "results"))
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
TEACHING_DIR = NOTEBOOKS_DIR / "teaching"
CONFIGS_DIR = REPO_ROOT / "configs"
STUDY_PRESETS_DIR = CONFIGS_DIR / "studies"
README_PATH = REPO_ROOT / "README.md"

# Debian's package ``dataset-fashion-mnist`` installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def results_dir(root: str | Path | None = None) -> Path:
    """The results folder: ``root`` if given, else ``$QREPRO_RESULTS``, else ``results/``."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("QREPRO_RESULTS", RESULTS_DIR))


def checkpoints_dir(root: str | Path | None = None) -> Path:
    return results_dir(root) / "checkpoints"


def journals_dir(root: str | Path | None = None) -> Path:
    return results_dir(root) / "journals"


def tables_dir(root: str | Path | None = None) -> Path:
    return results_dir(root) / "tables"


def figures_dir(root: str | Path | None = None) -> Path:
    return results_dir(root) / "figures"


def executed_notebooks_dir(root: str | Path | None = None) -> Path:
    return results_dir(root) / "notebooks"


def manifest_path(root: str | Path | None = None) -> Path:
    """The manifest: key, inputs and SHA-256 of every artifact written under ``root``."""
    return results_dir(root) / "manifest.json"
