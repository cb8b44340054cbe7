"""Append-only JSON-lines files: the only resumable state of a study.

A record is one ``write`` of a whole line followed by ``fsync``; each line carries the SHA-256 of
its own content (``sha256``), so an edited line is caught like a torn one.  Reading never loses a
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

from .cache import append_bytes, record_digest
from .errors import TRUST_UNVERIFIED, BadInput


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
                 set_aside: bool = True, trust_unverified: bool = False) -> list[dict]:
    """The valid records of ``path`` in file order (without their ``sha256`` field).

    ``validate(record)`` returns ``None`` for a good record or the reason it is bad.  Bad
    lines are set aside (see the module docstring) when ``set_aside``; otherwise only skipped and
    reported.  A line whose checksum does not match is bad, and so is one without a checksum among
    lines that have one; a file where no line has one (an older qrepro's) is refused.  With
    ``trust_unverified`` lines without a checksum are read.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JournalError(f"journal {path} cannot be read ({err.strerror})") from None
    if b"\0" in raw[:4096]:  # a journal path that names a checkpoint or another binary file
        raise JournalError(f"{path} holds binary data, not JSON lines (is it a checkpoint?); pass a journal path "
                           "(a .jsonl file, or one that does not exist yet)")
    records, bad, unverified = [], [], []
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
            "holds a non-finite number" if not _finite(rec) else None
        if reason is None and "sha256" in rec:
            digest = rec.pop("sha256")
            reason = None if digest == record_digest(rec) else "its checksum does not match (the line was edited)"
        elif reason is None and not trust_unverified:
            unverified.append((number, line, f"it has no checksum (added by hand, or written by an older qrepro); "
                                             f"{TRUST_UNVERIFIED} keeps it"))
            continue
        if reason is None and validate:
            reason = validate(rec)
        if reason:
            bad.append((number, line, reason))
        else:
            records.append(rec)
    if unverified and not records:
        raise JournalError(f"{path}: its records have no checksums (written by an older qrepro, or the fields were "
                           f"removed), so they cannot be verified; {TRUST_UNVERIFIED} reads them anyway, or move the file away")
    bad = sorted(bad + unverified)
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
    """Append one record and its checksum as one whole line, flushed to disk (fsync), or nothing
    (:func:`qrepro.cache.append_bytes`: a failed append raises, naming the file and the cause)."""
    line = (json.dumps({**record, "sha256": record_digest(record)}, sort_keys=True, allow_nan=False) + "\n").encode()
    append_bytes(path, line, prefix=_newline_if_torn)


def _newline_if_torn(fd: int, size: int) -> bytes:
    """A newline to end a torn last line (kept, and set aside on reading), or nothing."""
    if size:
        os.lseek(fd, size - 1, os.SEEK_SET)
        if os.read(fd, 1) != b"\n":
            return b"\n"
    return b""


class JournalMismatch(BadInput):
    """A journal written by a search with another configuration."""


def _check_record(rec: dict) -> str | None:
    """Why ``rec`` is not a valid journal record, or None."""
    kind = rec.get("type")
    if kind == "header":
        return None if isinstance(rec.get("key"), str) and isinstance(rec.get("config"), dict) else "a header " \
            "without key or config"
    if kind not in ("pending", "eval"):
        return f"unknown record type {kind!r}"
    if not isinstance(rec.get("index"), int) or isinstance(rec.get("index"), bool) or rec["index"] < 0:
        return "no valid index"
    if not isinstance(rec.get("x"), list) or not all(isinstance(v, (int, float)) for v in rec["x"]):
        return "no valid x"
    if kind == "eval":
        for name in ("value", "size", "pruned_fraction"):
            if not isinstance(rec.get(name), (int, float)) or isinstance(rec.get(name), bool):
                return f"no valid {name}"
        if not isinstance(rec.get("feasible"), bool) or not isinstance(rec.get("ratios"), list):
            return "no valid feasible / ratios"
    return None


def read_journal(path: str | Path, set_aside: bool = True, trust_unverified: bool = False) -> tuple[dict, list[dict]]:
    """``(header, records)`` of a journal: valid records only, each index once (the first);
    garbage lines are set aside (:mod:`qrepro.journal`), never lost or rewritten."""
    records = read_records(path, _check_record, set_aside=set_aside, trust_unverified=trust_unverified)
    if not records or records[0].get("type") != "header":
        raise JournalMismatch(f"{path} is not a qrepro search journal (its first valid line is not a header); "
                              "pass another journal path or move this file away")
    body, seen = [], set()
    for r in records[1:]:
        if r["type"] == "header":
            continue
        if (r["type"], r["index"]) not in seen:
            seen.add((r["type"], r["index"]))
            body.append(r)
    return records[0], body


class Journal:
    """JSON lines: a header, then ``pending`` (a candidate about to be evaluated) and
    ``eval`` records, appended with :func:`qrepro.journal.append_record`.  Resuming keeps
    every valid record; bad lines are set aside, the file is never rewritten."""

    def __init__(self, path: str | Path | None, header: dict, trust_unverified: bool = False):
        self.path = Path(path) if path is not None else None
        self.header = header
        self.records: list[dict] = []
        if self.path is None:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            stored, self.records = read_journal(self.path, trust_unverified=trust_unverified)
            if stored["key"] != header["key"]:
                raise JournalMismatch(
                    f"{self.path} was written by a search with another configuration (key {stored['key']}, "
                    f"this search has {header['key']}); pass a new journal path or move the old one away")
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            append_record(self.path, {"type": "header", **header})

    def add(self, record: dict):
        self.records.append(record)
        if self.path is not None:
            append_record(self.path, record)

    @property
    def evals(self) -> list[dict]:
        return [r for r in self.records if r["type"] == "eval"]

    def pending(self) -> list[dict]:
        done = {r["index"] for r in self.evals}
        return [r for r in self.records if r["type"] == "pending" and r["index"] not in done]


def load_journal(path: str | Path, trust_unverified: bool = False) -> tuple[dict, list[dict]]:
    """``(header, eval records by index)`` of a journal, read-only (bad lines skipped and reported)."""
    header, records = read_journal(path, set_aside=False, trust_unverified=trust_unverified)
    return header, sorted((r for r in records if r["type"] == "eval"), key=lambda r: r["index"])
