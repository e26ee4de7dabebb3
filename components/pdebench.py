"""Read and write PDEBench HDF5 files: the 1D time-series layout and the 2D Darcy-flow layout.

Layouts, told apart by their keys:

* 1D (advection, Burgers, diffusion-reaction, ...): dataset ``tensor`` of shape (N, T, X), the
  solution at T saved times with ``tensor[:, 0]`` the initial condition; optionally
  ``x-coordinate`` (X,) and ``t-coordinate`` (T,) or (T + 1,) (PDEBench stores one extra time).
* Darcy flow (``2D_DarcyFlow_*.hdf5``): dataset ``nu`` (N, H, W), the coefficient field, and
  ``tensor`` (N, 1, H, W), the steady-state solution.

PDEBench files hold up to 10,000 samples of 1024 points at 201 times, so readers slice the
datasets on disk (``max_samples``, chosen snapshots) rather than loading them whole.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from components.atomic import atomic_path
from components.errors import DataError

__all__ = ["read_pdebench", "write_pdebench_1d", "write_pdebench_darcy"]

_HINT = (
    "PDEBench 1D files hold 'tensor' (N, T, X); Darcy files hold 'nu' (N, H, W) and 'tensor' (N, 1, H, W). "
    "Convert other data with write_pdebench_1d or write_pdebench_darcy."
)


def read_pdebench(
    path: str | Path, n_snapshots: int = 1, max_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read a PDEBench file as (input, target) float32 arrays.

    A file with a ``nu`` dataset is read as Darcy flow, otherwise as the 1D layout.

    * 1D: ``x = tensor[:, 0:1]`` (N, 1, X), the initial condition; ``y`` (N, n_snapshots, X) the
      snapshots at indices ``(T - 1) * k / n_snapshots``, ``k = 1..n_snapshots``: equally spaced,
      ending at the last saved time. ``T - 1`` must be divisible by ``n_snapshots``.
    * Darcy: ``x = nu[:, None]`` (N, 1, H, W), ``y = tensor`` (N, 1, H, W); ``n_snapshots`` must be 1.

    Args:
        path: the HDF5 file.
        n_snapshots: how many later snapshots form the 1D target.
        max_samples: read at most this many samples, the first ones (None: all).

    Returns:
        ``(x, y)`` float32 arrays with the same number of samples.

    Raises:
        DataError: the file is missing or not HDF5, lacks a dataset, has the wrong shape, holds
            NaN or inf, or has no samples. Nothing is returned in that case.
    """
    if isinstance(n_snapshots, bool) or not isinstance(n_snapshots, int) or n_snapshots < 1:
        raise ValueError(f"n_snapshots must be a positive integer; got {n_snapshots!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 1
    ):
        raise ValueError(f"max_samples must be a positive integer or None; got {max_samples!r}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found", hint=_HINT)
    if not h5py.is_hdf5(path):
        raise DataError(f"{path}: not an HDF5 file; expected a PDEBench .hdf5 file with dataset 'tensor'", hint=_HINT)
    with h5py.File(path, "r") as f:
        if "nu" in f:
            x, y = _read_darcy(f, path, n_snapshots, max_samples)
        else:
            x, y = _read_1d(f, path, n_snapshots, max_samples)
    return x, y


def write_pdebench_1d(
    path: str | Path,
    tensor: np.ndarray,
    x_coord: np.ndarray | None = None,
    t_coord: np.ndarray | None = None,
) -> None:
    """Write a 1D PDEBench file atomically: ``tensor`` (N, T, X), optional coordinates.

    Args:
        path: destination; replaced only once the file is complete.
        tensor: solutions, shape (N, T, X), ``tensor[:, 0]`` the initial condition.
        x_coord: grid points, shape (X,), stored as ``x-coordinate``.
        t_coord: times, shape (T,) or (T + 1,), stored as ``t-coordinate``.
    """
    tensor = np.asarray(tensor)
    if tensor.ndim != 3 or 0 in tensor.shape:
        raise ValueError(f"tensor must have shape (N, T, X) with no zero sizes; got {tensor.shape}")
    n_t, n_x = tensor.shape[1:]
    if x_coord is not None and np.shape(x_coord) != (n_x,):
        raise ValueError(f"x_coord must have shape ({n_x},) to match tensor {tensor.shape}; got {np.shape(x_coord)}")
    if t_coord is not None and np.shape(t_coord) not in {(n_t,), (n_t + 1,)}:
        raise ValueError(
            f"t_coord must have shape ({n_t},) or ({n_t + 1},) to match tensor {tensor.shape}; got {np.shape(t_coord)}"
        )
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("tensor", data=tensor.astype(np.float32))
        if x_coord is not None:
            f.create_dataset("x-coordinate", data=np.asarray(x_coord, dtype=np.float32))
        if t_coord is not None:
            f.create_dataset("t-coordinate", data=np.asarray(t_coord, dtype=np.float32))


def write_pdebench_darcy(path: str | Path, nu: np.ndarray, tensor: np.ndarray) -> None:
    """Write a Darcy-flow PDEBench file atomically: ``nu`` (N, H, W) and ``tensor`` (N, 1, H, W).

    Args:
        path: destination; replaced only once the file is complete.
        nu: coefficient fields, shape (N, H, W).
        tensor: solutions, shape (N, 1, H, W).
    """
    nu, tensor = np.asarray(nu), np.asarray(tensor)
    if nu.ndim != 3 or 0 in nu.shape:
        raise ValueError(f"nu must have shape (N, H, W) with no zero sizes; got {nu.shape}")
    n, h, w = nu.shape
    if tensor.shape != (n, 1, h, w):
        raise ValueError(f"tensor must have shape {(n, 1, h, w)} to match nu {nu.shape}; got {tensor.shape}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("nu", data=nu.astype(np.float32))
        f.create_dataset("tensor", data=tensor.astype(np.float32))


def _read_1d(f: h5py.File, path: Path, n_snapshots: int, max_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    tensor = _dataset(f, path, "tensor", ndim=3, expected="(N, T, X)")
    n_t = tensor.shape[1]
    if n_t < 2:
        raise DataError(
            f"{path}: dataset 'tensor' has {n_t} time step(s), shape {tensor.shape}; "
            "expected (N, T, X) with T >= 2 (an initial condition and a later time)",
            hint=_HINT,
        )
    if (n_t - 1) % n_snapshots:
        valid = [k for k in range(1, n_t) if (n_t - 1) % k == 0]
        raise DataError(
            f"{path}: dataset 'tensor' has T={n_t} times; n_snapshots={n_snapshots} does not divide the "
            f"{n_t - 1} steps after t=0, so the snapshots cannot be equally spaced",
            hint=f"choose n_snapshots from {valid}",
        )
    n = _n_read(tensor, path, "tensor", max_samples)
    step = (n_t - 1) // n_snapshots
    x = tensor[:n, 0:1, :]
    y = tensor[:n, step::step, :]  # indices step, 2 step, ..., T - 1
    _check_finite(x, path, "tensor")
    _check_finite(y, path, "tensor")
    return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def _read_darcy(f: h5py.File, path: Path, n_snapshots: int, max_samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    if n_snapshots != 1:
        raise ValueError(
            f"n_snapshots={n_snapshots}, but Darcy flow ({path}) is steady: it has one solution per sample"
        )
    nu = _dataset(f, path, "nu", ndim=3, expected="(N, H, W)")
    tensor = _dataset(f, path, "tensor", ndim=4, expected="(N, 1, H, W)")
    n, h, w = nu.shape
    if tensor.shape != (n, 1, h, w):
        raise DataError(
            f"{path}: dataset 'tensor' has shape {tensor.shape}; expected {(n, 1, h, w)} to match 'nu' {nu.shape}",
            hint=_HINT,
        )
    n = _n_read(nu, path, "nu", max_samples)
    x = nu[:n][:, None]
    y = tensor[:n]
    _check_finite(x, path, "nu")
    _check_finite(y, path, "tensor")
    return x.astype(np.float32, copy=False), y.astype(np.float32, copy=False)


def _dataset(f: h5py.File, path: Path, key: str, ndim: int, expected: str) -> h5py.Dataset:
    """The dataset ``key``, checked for existence and dimensionality (no data is read)."""
    if key not in f:
        raise DataError(
            f"{path}: dataset '{key}' is missing (keys: {sorted(f.keys())}); expected '{key}' {expected}", hint=_HINT
        )
    ds = f[key]
    if not isinstance(ds, h5py.Dataset):
        raise DataError(f"{path}: '{key}' is a group, not a dataset; expected '{key}' {expected}", hint=_HINT)
    if ds.ndim != ndim:
        raise DataError(f"{path}: dataset '{key}' has shape {ds.shape}; expected {expected}", hint=_HINT)
    if not np.issubdtype(ds.dtype, np.number):
        raise DataError(
            f"{path}: dataset '{key}' has dtype {ds.dtype}; expected numbers of shape {expected}", hint=_HINT
        )
    return ds


def _n_read(ds: h5py.Dataset, path: Path, key: str, max_samples: int | None) -> int:
    """How many leading samples to read; refuses an empty dataset."""
    if 0 in ds.shape:
        raise DataError(
            f"{path}: dataset '{key}' has shape {ds.shape}, no samples or an empty axis; expected at least one sample",
            hint=_HINT,
        )
    return ds.shape[0] if max_samples is None else min(max_samples, ds.shape[0])


def _check_finite(a: np.ndarray, path: Path, key: str) -> None:
    bad = int((~np.isfinite(a)).sum())
    if bad:
        raise DataError(
            f"{path}: dataset '{key}' holds {bad} NaN or inf values in the samples read; expected finite numbers",
            hint="regenerate or clean the file",
        )
