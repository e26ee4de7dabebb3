"""A user's own file as a task: ``npz:PATH`` (arrays) or ``pdebench:PATH`` (a PDEBench HDF5 file)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from components.data import RawTask, Split
from components.errors import DataError
from components.npzfile import read_npz

__all__ = ["USER_FILE", "USER_READERS", "load_npz", "load_pdebench", "load_user_npz", "load_user_pdebench"]

#: Name of a user's file once the assets stage has copied it into the target asset directory.
USER_FILE = {"npz": "data.npz", "pdebench": "data.hdf5"}


def _npz_split(arrays: dict[str, np.ndarray], path: Path, part: str, required: bool) -> Split | None:
    kx, ky, km = f"x_{part}", f"y_{part}", f"mask_{part}"
    if kx not in arrays and ky not in arrays:
        if required:
            raise DataError(
                f"{path}: array {kx!r} is missing; expected x_train, y_train, x_test, y_test "
                f"(optionally x_val, y_val); found {', '.join(sorted(arrays)) or 'no arrays'}"
            )
        return None
    for key in (kx, ky):
        if key not in arrays:
            raise DataError(f"{path}: array {key!r} is missing while its partner is present")
    x, y = arrays[kx], arrays[ky]
    if x.ndim == 2:  # (N, L): one channel
        x = x[:, None, :]
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{path}: array {kx!r} has dtype {x.dtype}; expected numbers")
    mask = arrays[km].astype(bool) if km in arrays else None
    if y.dtype == bool:
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.integer):
        y = y.astype(np.int64)
    elif np.issubdtype(y.dtype, np.floating):
        y = y.astype(np.float32)
    else:
        raise DataError(f"{path}: array {ky!r} has dtype {y.dtype}; expected integer labels or floats")
    return Split(x.astype(np.float32), y, mask=mask)


def load_npz(path: str | Path) -> RawTask:
    """Read a user's ``.npz``: ``x_train``, ``y_train``, ``x_test``, ``y_test``, optionally ``x_val``/``y_val``.

    ``x`` is (N, L), (N, C, L) or (N, C, H, W); an optional ``mask_<split>`` (N, L) marks the real
    steps of padded sequences. Never unpickles.
    """
    path = Path(path)
    arrays = read_npz(path)
    train = _npz_split(arrays, path, "train", True)
    test = _npz_split(arrays, path, "test", True)
    val = _npz_split(arrays, path, "val", False)
    return RawTask(train=train, test=test, val=val)


def load_pdebench(path: str | Path, data: Any) -> RawTask:
    """A PDEBench HDF5 file as one pool of (initial condition -> later snapshots) pairs."""
    from components.pdebench import read_pdebench

    x, y = read_pdebench(path, n_snapshots=data.n_snapshots)
    return RawTask(train=Split(x, y), test=None, task_type="field")


USER_READERS: dict[str, Callable[[Path, Any], RawTask]] = {
    "npz": lambda path, data: load_npz(path),
    "pdebench": load_pdebench,
}


def load_user_npz(root: Path, data: Any) -> RawTask:
    return USER_READERS["npz"](root / USER_FILE["npz"], data)


def load_user_pdebench(root: Path, data: Any) -> RawTask:
    return USER_READERS["pdebench"](root / USER_FILE["pdebench"], data)
