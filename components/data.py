"""Prepared splits: validation carved from training data, normalisation fitted on train only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.atomic import save_npz, write_json
from components.errors import DataError

__all__ = [
    "Split",
    "validate_split",
    "stratified_split",
    "fit_normalisation",
    "apply_normalisation",
    "save_split",
    "load_split",
]


@dataclass(frozen=True)
class Split:
    """One split: ``x`` (N, C, L) float32 and ``y`` (N,) int64."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


def validate_split(x: np.ndarray, y: np.ndarray, where: str) -> None:
    """Refuse arrays a model cannot learn from; ``where`` names the file and split in messages."""
    if len(x) == 0:
        raise DataError(f"{where}: the split is empty")
    if x.ndim != 3:
        raise DataError(f"{where}: x has shape {x.shape}; expected (N, C, L)")
    if len(x) != len(y):
        raise DataError(f"{where}: x has {len(x)} samples but y has {len(y)}")
    if not np.isfinite(x).all():
        raise DataError(f"{where}: x contains NaN or inf ({int((~np.isfinite(x)).sum())} values)")


def stratified_split(x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int) -> tuple[Split, Split]:
    """Split (x, y) into train and validation, keeping each class's share in both.

    The permutation depends only on ``seed``, so the split is reproducible.
    """
    rng = np.random.default_rng(seed)
    val_idx: list[np.ndarray] = []
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if n_val == 0 or n_val == len(idx):
            raise DataError(f"class {label} has {len(idx)} samples: too few to split with val_fraction={val_fraction}")
        val_idx.append(idx[:n_val])
    val = np.sort(np.concatenate(val_idx))
    train = np.setdiff1d(np.arange(len(y)), val)
    train = rng.permutation(train)
    return Split(x[train], y[train]), Split(x[val], y[val])


def fit_normalisation(x: np.ndarray) -> dict[str, list[float]]:
    """Per-channel mean and std of (N, C, L) training inputs (std floored to avoid division by 0)."""
    mean = x.mean(axis=(0, 2), dtype=np.float64)
    std = np.maximum(x.std(axis=(0, 2), dtype=np.float64), 1e-6)
    return {"mean": mean.tolist(), "std": std.tolist()}


def apply_normalisation(x: np.ndarray, stats: dict[str, list[float]]) -> np.ndarray:
    """Standardise (N, C, L) inputs channel-wise with stats from :func:`fit_normalisation`."""
    mean = np.asarray(stats["mean"], dtype=np.float32)[None, :, None]
    std = np.asarray(stats["std"], dtype=np.float32)[None, :, None]
    return ((x - mean) / std).astype(np.float32)


def save_split(path: str | Path, split: Split) -> None:
    """Write a split as ``.npz`` with arrays ``x`` and ``y``, atomically."""
    save_npz(path, x=split.x, y=split.y)


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`save_split` (never unpickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            split = Split(f["x"], f["y"])
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"cannot read split {path}: {exc}", hint="run the prepare stage again") from exc
    validate_split(split.x, split.y, str(path))
    return split


def write_meta(path: str | Path, meta: dict) -> None:
    """Write the prepared data's metadata (task type, shapes, classes, normalisation)."""
    write_json(path, meta)
