"""Canonical hashing for cache keys, and writes that are done only when all on disk.

``config_key(cfg)`` hashes the canonical JSON of a config (key order and ``3`` vs ``3.0``
do not matter); :mod:`qrepro.artifacts` builds every artifact's key from it.

Every file the package writes goes through :func:`write_bytes_atomic` (a temporary file beside
the target, every byte written, flushed with ``fsync``, then renamed over the target) or
:func:`append_bytes` (one whole line or nothing).  A short write is continued; a failed one
(disk full, file-size limit, read-only, quota) removes what it wrote and raises
:class:`~qrepro.errors.WriteFailed` naming the file and the cause.  No write follows a symlink: a
planted ``<name>.tmp`` link is removed, never written through, and the target is replaced by a
rename, which replaces a link rather than following it.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from .errors import WriteFailed

CAUSES = {errno.ENOSPC: "the disk is full", errno.EFBIG: "the file-size limit (ulimit -f) was reached",
          errno.EROFS: "the file system is read-only", errno.EDQUOT: "the disk quota is exceeded",
          errno.EACCES: "permission denied", errno.ELOOP: "the path is a symlink, which qrepro never writes through"}

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


def record_digest(obj) -> str:
    """The full SHA-256 of ``obj`` as JSON with sorted keys and no spaces: the checksum a file carries
    for its records (a checkpoint's metrics and config, a packed model's header, each journal line)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _failed(path: Path, err: OSError, what: str) -> WriteFailed:
    cause = CAUSES.get(err.errno, err.strerror or str(err))
    left = "the file was left as it was" if what == "the write" else "nothing of the record was left"
    return WriteFailed(f"{path}: {what} failed: {cause}; {left} (make room or lift the limit, then run the same "
                       "command again: finished work is kept)")


def _write_all(fd: int, data: bytes):
    """Every byte of ``data`` to ``fd`` (a short write is continued), then ``fsync``."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:
            raise OSError(errno.EIO, "the system wrote nothing")
        view = view[n:]
    os.fsync(fd)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it: a reader sees the old file or
    the new one, never a part; on failure the old file is left and the temporary one removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # an old temporary file, or a planted link: removed, never written through
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _failed(path, err, "the write") from None
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def append_bytes(path: str | Path, data: bytes, prefix: Callable[[int, int], bytes] | None = None):
    """Append ``data`` to ``path`` (created if absent), all of it or nothing: on failure the file is cut
    back to its size before the append, so no torn record is left.  ``prefix(fd, size)``: bytes to
    write before ``data``, decided on the open file (a newline ending a torn last line)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as err:
        raise _failed(path, err, "the append") from None
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, (prefix(fd, size) if prefix else b"") + data)
        except OSError as err:
            try:
                os.ftruncate(fd, size)
            except OSError:
                pass
            raise _failed(path, err, "the append") from None
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj) -> Path:
    return write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str))
