"""Atomic file and directory writes: an output appears complete or not at all.

A process killed at any moment leaves the destination either as it was or as the block wrote
it; the destination never goes missing, not even for an instant, where the OS can swap two
directories in one step (Linux ``renameat2``). Temporary entries sit next to the destination
and carry the writer's pid (``.NAME.PID.XXXX.tmp``, ``.NAME.PID.old``), so the leftovers of a
killed writer are told apart from a live one's: the next write of the same path removes them,
and :func:`recover` (which ``recraft run`` calls on its workspace) sweeps a whole tree.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from components.faults import fault_point

__all__ = ["atomic_path", "atomic_dir", "recover", "write_json", "write_text", "save_npz"]

# ".NAME.PID.XXXX.tmp" (a block's scratch entry) or ".NAME.PID.old" (the previous directory,
# in the two-rename fallback). mkstemp/mkdtemp's random part has no dots.
_LEFTOVER = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.(?:(?P<tmp>[a-z0-9_]+\.tmp)|old)")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; outputs get the usual permissions instead,
# so colleagues sharing a workspace or a DVC cache can read them.
_UMASK = _umask()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _recover_entry(parent: Path, entry: str) -> None:
    """Clean up ``parent/entry`` if it is the leftover of a dead writer: restore an ``.old``
    whose destination is missing, remove anything else."""
    m = _LEFTOVER.fullmatch(entry)
    if m is None or _alive(int(m["pid"])):
        return
    dest = parent / m["name"]
    if m["tmp"] is None and not os.path.lexists(dest):
        os.replace(parent / entry, dest)  # killed between the fallback's two renames
    else:
        _remove(parent / entry)


def _recover_path(path: Path) -> None:
    """Clean up the leftovers of dead writers of ``path`` (before writing it again)."""
    prefix = f".{path.name}."
    with os.scandir(path.parent) as entries:
        names = [e.name for e in entries if e.name.startswith(prefix)]
    for name in names:
        _recover_entry(path.parent, name)


def recover(root: str | Path) -> None:
    """Clean up every leftover of a killed writer under ``root`` (see the module doc)."""
    for parent, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            if _LEFTOVER.fullmatch(name):
                _recover_entry(Path(parent), name)
        dirs[:] = [d for d in dirs if not _LEFTOVER.fullmatch(d)]  # never descend into one


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds.

    The temporary file lives in the same directory, so the final ``os.replace`` is atomic on
    POSIX file systems: ``path`` holds the old or the new content, never neither. On any
    exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover_path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; it replaces ``path`` (a directory) only if the block succeeds.

    The old and new directories are swapped in one step where the OS allows (Linux), so
    ``path`` never goes missing; elsewhere the old one is renamed aside first, and a writer
    killed between the two renames has it restored by the next write or :func:`recover`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover_path(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        _replace_dir(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # after a swap: the previous directory


def _replace_dir(tmp: Path, path: Path) -> None:
    """Put the directory ``tmp`` at ``path``; a previous ``path`` ends up at ``tmp`` or is removed."""
    if not os.path.lexists(path):
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        fault_point(path.name, "atomic_rename")  # test-only (components.faults)
    else:
        old = path.with_name(f".{path.name}.{os.getpid()}.old")
        _remove(old)
        os.replace(path, old)
        fault_point(path.name, "atomic_rename")  # test-only: the window recover() repairs
        os.replace(tmp, path)
        _remove(old)


@functools.cache
def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:  # a libc older than glibc 2.28
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; ``False`` where the OS or file system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """Write arrays to an uncompressed ``.npz`` atomically (loadable with ``allow_pickle=False``)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
