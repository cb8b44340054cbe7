"""Every path the package uses, in one place (notebooks never write a literal path).

In the source tree (a clone, installed editable) ``data/`` and ``results/`` are the
repository's; from an installed wheel they are the working directory's, and the notebooks,
which live in the source tree only, are refused with one line (:func:`require_source_tree`).
``QREPRO_RESULTS`` and ``QREPRO_DATA`` override the defaults, so a smoke study can write into
a temporary folder without touching the committed cache.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import BadInput

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SOURCE_TREE = (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "notebooks").is_dir()
HOME = REPO_ROOT if SOURCE_TREE else Path.cwd()  # where data/ and results/ are by default
DATA_DIR = Path(os.environ.get("QREPRO_DATA", HOME / "data"))
RESULTS_DIR = Path(os.environ.get("QREPRO_RESULTS", HOME / "results"))
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
TEACHING_DIR = NOTEBOOKS_DIR / "teaching"
STUDY_PRESETS_DIR = PACKAGE_DIR / "presets"  # package data: a wheel ships them

# Debian's package ``dataset-fashion-mnist`` installs the IDX files here.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def require_source_tree(what: str):
    """Refuse ``what`` (the notebooks, the README) outside the source tree, with how to get it."""
    if not SOURCE_TREE:
        raise BadInput(f"this command needs {what} of qrepro's source tree (the installed package has no notebooks "
                       "or README): git clone the repository and run it there (make reproduce, or pip install -e .)")


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
