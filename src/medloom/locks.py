"""One writer per loom (and per export folder), many readers.

A lock is an advisory `flock` on `.medloom-lock` in the folder: the kernel releases it when the holder
exits, however it exits (SIGKILL included), so a dead holder's lock is simply taken over and no stale lock
can outlive its process. Writers (ingest, annotate, the curation steps, split, plan) hold it exclusively;
exports hold the loom shared (several exports may read one loom at once, no writer meanwhile) and their
output folder exclusively. Each holder adds a line (pid, command, since when) to the lock file, so a
refused run can say who holds it.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from . import layout
from .errors import LockHeld
from .outputs import LOCK

POLL_S = 0.2
T = TypeVar("T")


def process_alive(pid: int) -> bool:
    """Whether a process exists and is not a zombie (killed, not yet reaped by its parent)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:  # no /proc: existence is all we know
        return True


def holders(folder: Path) -> list[dict]:
    """The live holders named in a folder's lock file."""
    try:
        text = (Path(folder) / LOCK).read_text(encoding="utf-8")
    except OSError:
        return []
    found = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if entry.get("host") != socket.gethostname() or process_alive(int(entry.get("pid", 0))):
            found.append(entry)
    return found


def describe(entries: list[dict]) -> str:
    if not entries:
        return "another medloom process (it is starting or ending)"
    return "; ".join(f"pid {e['pid']} ({e['command']}) since {e['since']}" for e in entries)


def command_line() -> str:
    args = [os.path.basename(sys.argv[0] or "python")] + sys.argv[1:]
    text = " ".join(args)
    return text if len(text) < 200 else text[:197] + "..."


@contextmanager
def hold(
    folder: str | os.PathLike, command: str | None = None, *, shared: bool = False, wait: bool = False, what: str = "loom"
) -> Iterator[None]:
    """Hold the folder's lock for the duration of the block.

    Without `wait`, a lock another process holds raises LockHeld at once, naming the holder; with `wait`,
    the call waits until the lock is free.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file, not a {what} folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not wait:
                    raise LockHeld(
                        f"the {what} {folder} is in use by {describe(holders(folder))}; wait for it "
                        "to finish, or pass --wait to queue behind it"
                    ) from None
                time.sleep(POLL_S)
        entry = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or command_line(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "shared": shared,
        }
        if not shared:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        else:  # other readers' lines stay while any of them lives
            if not holders(folder):
                os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_END)
        os.write(fd, (json.dumps(entry) + "\n").encode())
        yield
    finally:
        os.close(fd)  # releases the flock


def writer(step: Callable[..., T]) -> Callable[..., T]:
    """A step that writes into the loom (its first argument): it runs holding the loom's lock, and takes
    `wait=True` to queue behind another writer instead of failing at once."""

    @functools.wraps(step)
    def run(loom, *args, wait: bool = False, **kwargs):
        if not (layout.catalog_dir(loom) / "manifest.json").is_file():  # never create a loom by reading one
            raise FileNotFoundError(f"{loom}: no catalog here (run `medloom ingest RECIPE` first)")
        with hold(loom, wait=wait):
            return step(loom, *args, **kwargs)

    return run
