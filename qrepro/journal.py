"""Append-only JSON-lines files: the only resumable state of a study.

A record is one ``write`` of a whole line followed by ``fsync``.  Reading never loses a
valid record and never rewrites the file: a torn or garbage line (a crash mid-write, an
edit, a disk error) is *set aside* -- copied with its line number and the reason into the
side file ``<name>.rejected.jsonl`` and reported once -- and every valid record before
and after it is kept.  A file whose last line is torn gets a newline appended before the
next record, so the torn text stays a line of its own.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Callable

from .errors import BadInput


class JournalError(BadInput):
    """A journal that cannot be used at all (not JSON lines, no header, another search's)."""


def rejected_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".rejected.jsonl")


def _finite(obj) -> bool:
    if isinstance(obj, float):
        return math.isfinite(obj)
    if isinstance(obj, dict):
        return all(_finite(v) for v in obj.values())
    if isinstance(obj, list):
        return all(_finite(v) for v in obj)
    return True


def read_records(path: str | Path, validate: Callable[[dict], str | None] | None = None,
                 set_aside: bool = True) -> list[dict]:
    """The valid records of ``path`` in file order.

    ``validate(record)`` returns ``None`` for a good record or the reason it is bad.  Bad
    lines are set aside (see the module docstring) when ``set_aside``; otherwise only skipped
    and reported.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JournalError(f"journal {path} cannot be read ({err.strerror})") from None
    records, bad = [], []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            bad.append((number, line, f"not a JSON line ({type(err).__name__})"))
            continue
        reason = "not a JSON object" if not isinstance(rec, dict) else \
            "holds a non-finite number" if not _finite(rec) else validate(rec) if validate else None
        if reason:
            bad.append((number, line, reason))
        else:
            records.append(rec)
    if bad:
        _report(path, bad, set_aside)
    return records


def _report(path: Path, bad: list, set_aside: bool):
    side = rejected_path(path)
    seen = set()
    if side.exists():
        for line in side.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                seen.add((r["line"], r["text"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    new = [(n, t.decode("utf-8", "replace"), why) for n, t, why in bad]
    new = [b for b in new if (b[0], b[1]) not in seen]
    if set_aside and new:
        with open(side, "a") as f:
            for n, text, why in new:
                f.write(json.dumps({"line": n, "text": text, "reason": why}) + "\n")
    for n, _, why in (new if set_aside else [(n, None, w) for n, _, w in bad]):
        where = f"; copied to {side}" if set_aside else ""
        print(f"warning: {path}: line {n} skipped ({why}){where}; every other record is kept", file=sys.stderr)


def append_record(path: str | Path, record: dict):
    """Append one record as one whole line, flushed to disk (fsync)."""
    path = Path(path)
    line = (json.dumps(record, sort_keys=True, allow_nan=False) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            os.lseek(fd, size - 1, os.SEEK_SET)
            if os.read(fd, 1) != b"\n":  # a torn last line: terminate it, keep it (set aside on reading)
                line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
