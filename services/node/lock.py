"""One node per data folder: ``timebank up`` holds a lock there, with its pid and address for whoever comes next."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class AlreadyRunning(Exception):
    """Another node serves from this data folder."""

    def __init__(self, data_dir: Path, holder: str) -> None:
        pid, _, address = holder.strip().partition(" ")
        super().__init__(f"a node is already running in {data_dir} (pid {pid or '?'}, {address or 'address unknown'})")


def hold(data_dir: Path, address: str) -> IO[str]:
    """Lock ``data_dir`` for this process until it exits (or the returned file is closed), or raise
    ``AlreadyRunning`` naming the holder. The kernel drops the lock with the process, so a node killed by SIGKILL
    leaves nothing stale behind."""
    path = data_dir / "node.lock"
    lock = path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read()
        lock.close()
        raise AlreadyRunning(data_dir, holder) from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()} {address}\n")
    lock.flush()
    return lock
