"""The package's error types: bad input (exit code 2 on the command line) and a failed run
(exit code 1).

Every check at a boundary raises :class:`BadInput` (a ``ValueError``) with one line saying
what is wrong, where (file, field, value) and how to fix it.  The command line prints that
line without a traceback (``--debug`` shows it).
"""
from __future__ import annotations

import os
from pathlib import Path


TRUST_UNVERIFIED = "--trust-unverified (trust_unverified=True in Python)"  # how to read a file without checksums


class BadInput(ValueError):
    """Something the user gave is wrong; the message says what, where, and how to fix it."""


class RunFailed(RuntimeError):
    """A run that was given good input failed; nothing already written was lost."""


class WriteFailed(RunFailed):
    """A file could not be written in full (disk full, file-size limit, read-only, ...): the message
    names the file and the cause; what was there before is left as it was."""


def check_writable_dir(path: str | Path, what: str) -> Path:
    """Create folder ``path`` if needed and check that files can be written there, before any work."""
    p = Path(path)
    for parent in [p, *p.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise BadInput(f"{what} {p}: {parent} is a file, not a folder; pass another path")
            break
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".qrepro-write-test-{os.getpid()}"  # one per process: torchrun's ranks check at once
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise BadInput(f"{what} {p} is not writable ({err.strerror}); pass a folder you can write to") from None
    return p


def check_output_file(path: str | Path, what: str) -> Path:
    """The folder of output file ``path`` is writable and ``path`` is not a folder."""
    p = Path(path)
    if p.is_dir():
        raise BadInput(f"{what} {p} is a folder; pass a file path")
    check_writable_dir(p.parent if str(p.parent) else Path("."), f"the folder of {what}")
    return p


def check_input_file(path: str | Path, what: str, fix: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise BadInput(f"{what} {p} does not exist; {fix}")
    if not p.is_file():
        raise BadInput(f"{what} {p} is not a file; {fix}")
    return p
