"""Canonical hashing for cache keys, and atomic writes (text, JSON).

``config_key(cfg)`` hashes the canonical JSON of a config (key order and ``3`` vs ``3.0``
do not matter); :mod:`qrepro.artifacts` builds every artifact's key from it.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

KEY_LENGTH = 12


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


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file beside it: a reader sees the old file or
    the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_json_atomic(path: Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
