"""One ``recraft run`` at a time per workspace: an exclusive ``flock`` on a file inside it.

The OS releases the lock when the holder exits, however it exits (``kill -9`` included), so a
crashed run never leaves a stale lock. The holder writes its pid into the file for the message
a second run prints.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from components.errors import UserError

__all__ = ["workspace_lock"]


@contextmanager
def workspace_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the block.

    Raises:
        UserError: another process holds it; the message names the file and that process's pid.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # not inherited by child processes
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise UserError(
                f"this workspace is busy: another recraft run (pid {holder}) holds the lock {path}",
                hint="wait for that run to finish, or give this one another --workdir",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # releases the lock
