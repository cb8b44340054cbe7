"""One writer at a time: an exclusive lock beside a file that one process writes (a search's journal,
a results folder's artifacts).

``with hold(path, what):`` takes ``<path>.lock`` with ``fcntl.flock`` and writes the holder's PID, host
and command into it.  The kernel releases a flock when its process ends, however it ends, so a lock
left by a killed run is never stale: the file may stay, the lock does not.  A second writer gets one
line naming the holder (:class:`Locked`), or waits for it with ``wait=True`` (``--wait``).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput


class Locked(BadInput):
    """Another process is writing the same journal or results folder."""


def lock_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".lock")


def holder(path: str | Path) -> dict:
    """What the lock file of ``path`` says about its holder (empty if unreadable)."""
    try:
        return json.loads(lock_path(path).read_text())
    except (OSError, ValueError):
        return {}


@contextmanager
def hold(path: str | Path, what: str, wait: bool = False, poll: float = 0.5):
    """Hold the lock of ``path`` for the block; ``what`` names what it guards in the message
    (``"the search journal results/journals/x.jsonl"``)."""
    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    h = holder(path)
                    who = (f"process {h.get('pid')} on {h.get('host')} ({h.get('command', '?')}, since "
                           f"{h.get('since', '?')})") if h else "another process"
                    raise Locked(f"{what} is being written by {who}; wait for it to finish, or run again "
                                 "with --wait to start when it has") from None
                time.sleep(poll)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "command": " ".join(sys.argv)[:200],
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode())
        yield
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race another waiter)
