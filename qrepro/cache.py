"""Content-addressed artifacts: a cached file is keyed by a hash of everything that
determines it, never by its mere existence (an existence-only cache goes stale silently).

``config_key(cfg)`` hashes the canonical JSON of a config; ``artifact_path`` puts the key
in the file name; ``require`` stops with an error naming the artifact and the command
that makes it when the file is missing or carries another key.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

KEY_LENGTH = 12


class StaleArtifact(FileNotFoundError):
    """A cached artifact is missing or was made from other inputs."""


def _canonical(obj):
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)  # 3.0 and 3 determine the same run
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_key(cfg: dict) -> str:
    """A short stable hash of ``cfg`` (key order and 3 vs 3.0 do not matter)."""
    text = json.dumps(_canonical(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


def artifact_path(folder: Path, name: str, cfg: dict, suffix: str) -> Path:
    return Path(folder) / f"{name}-{config_key(cfg)}{suffix}"


def require(path: Path, make_command: str) -> Path:
    """Return ``path`` if it exists, else raise :class:`StaleArtifact` naming how to make it."""
    path = Path(path)
    if not path.exists():
        folder = path.parent
        others = sorted(p.name for p in folder.glob(path.name.rsplit("-", 1)[0] + "-*")) if folder.exists() else []
        stale = f" Found only artifacts made from other inputs: {', '.join(others)}." if others else ""
        raise StaleArtifact(f"missing cached artifact {path} (its key is the hash of the parameters asked for).{stale}"
                            f" Make it with: {make_command}")
    return path


def write_json_atomic(path: Path, obj) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path
