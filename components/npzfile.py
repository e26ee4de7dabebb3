"""Reading ``.npz`` archives: every array read eagerly, checked, never unpickled.

User data (``--task npz:PATH``), ``recraft predict --input`` and the prepared splits all come
through :func:`read_npz`, so a truncated, corrupt or pickled file gets one message naming it,
wherever it is read.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from components.errors import DataError

__all__ = ["read_npz"]

# A zip starts with a local file header, or (no members) with the end-of-archive record.
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")

# What numpy and zipfile raise on a damaged archive: a cut-off end (BadZipFile, EOFError), a
# failed CRC check (BadZipFile), bad deflate data (zlib.error), a mangled .npy header or short
# array data (ValueError), a mangled member entry (KeyError, NotImplementedError for an unknown
# compression method), and the OS's own read errors.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, KeyError, NotImplementedError, OSError)


# How a user fixes a file of their own that cannot be read.
_REWRITE = "write it again with numpy.savez (or copy it again, if a transfer cut it short)"


def read_npz(path: str | Path, hint: str = _REWRITE) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` archive at ``path``, by name.

    ``np.load`` is lazy: a member is decompressed and CRC-checked only when it is indexed. All
    members are read here, inside the guard, so a damaged archive fails here with a message
    naming the file, not later with a ``zipfile`` traceback.

    Args:
        path: the archive.
        hint: how to fix a damaged or unreadable file (default: write or copy a user's file again).

    Raises:
        DataError: the file is missing, not a zip archive, truncated or corrupt, or holds an
            array of Python objects (reading it would mean unpickling).
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist", hint=hint) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}", hint=hint) from exc
    if head not in _ZIP_MAGIC:
        raise DataError(f"cannot read {path} as .npz: it is not a zip archive of arrays", hint=hint)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: _read_member(archive, key, path, hint) for key in archive.files}
    except _DAMAGED as exc:
        raise DataError(
            f"cannot read {path} as .npz: the archive is truncated or corrupt ({_detail(exc)})", hint=hint
        ) from exc


def _read_member(archive: np.lib.npyio.NpzFile, key: str, path: Path, hint: str) -> np.ndarray:
    """One array, read now; an object array is refused by name, a damaged one named."""
    try:
        return archive[key]
    except _DAMAGED as exc:
        if _holds_objects(archive, key):
            raise DataError(
                f"{path}: array {key!r} holds Python objects (dtype object); save numeric arrays",
                hint="convert it first, e.g. np.asarray(a, dtype=np.float32); recraft never unpickles",
            ) from None
        raise DataError(
            f"cannot read {path} as .npz: array {key!r} is truncated or corrupt ({_detail(exc)})", hint=hint
        ) from exc


def _holds_objects(archive: np.lib.npyio.NpzFile, key: str) -> bool:
    """Whether the member's ``.npy`` header declares a dtype with Python objects (read, not unpickled)."""
    names = archive.zip.namelist()
    member = f"{key}.npy" if f"{key}.npy" in names else key
    try:
        with archive.zip.open(member) as fp:
            version = np.lib.format.read_magic(fp)
            # Format 3.0 differs from 2.0 only in the header's text encoding (utf8 field names).
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read(fp)
    except _DAMAGED:
        return False
    return dtype.hasobject


def _detail(exc: BaseException) -> str:
    """The library's own reason, short, as the parenthesised detail of our message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]
