"""Prepared splits: validation carved from training data, normalisation fitted on train only.

A split holds inputs ``x`` of shape (N, C, L) (sequences) or (N, C, H, W) (grids), targets ``y``
whose form depends on the task type, an optional padding ``mask`` (N, L) for sequences of unequal
length, and ``groups`` (N,): the labels FLD groups by (the class for classification, k-means
pseudo-labels of the targets otherwise).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from components.atomic import save_npz, write_json
from components.errors import DataError
from components.npzfile import read_npz

__all__ = [
    "RawTask",
    "Loader",
    "TASK_TYPES",
    "CLASSIFICATION",
    "Split",
    "PreparedMeta",
    "validate_arrays",
    "infer_task_type",
    "train_val_split",
    "UnstratifiedSplit",
    "subsample",
    "fit_normalisation",
    "apply_normalisation",
    "kmeans",
    "assign_clusters",
    "save_split",
    "load_split",
    "with_groups",
    "write_meta",
]

#: binary / multiclass: integer labels (N,); multilabel: 0/1 matrix (N, K); regression: floats
#: (N, D); field: floats with the input's spatial shape (N, C_out, *spatial).
TASK_TYPES = ("binary", "multiclass", "multilabel", "regression", "field")
CLASSIFICATION = ("binary", "multiclass")


@dataclass(frozen=True)
class Split:
    """One split: inputs ``x``, targets ``y``, FLD ``groups`` and an optional padding ``mask``."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None = None
    mask: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def take(self, idx: np.ndarray) -> Split:
        """The samples at ``idx``, in that order."""
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Split(self.x[idx], self.y[idx], pick(self.groups), pick(self.mask))


def _describe(where: str, name: str) -> str:
    return f"{where}: array {name!r}"


def validate_arrays(
    x: np.ndarray, y: np.ndarray, where: str, task_type: str | None = None, mask: np.ndarray | None = None
) -> None:
    """Refuse arrays a model cannot learn from.

    ``where`` names the file and split (for example ``data.npz (train)``); every message names it
    and the array, says what was wrong and what was expected.
    """
    if x.ndim not in (3, 4):
        raise DataError(
            f"{_describe(where, 'x')} has shape {x.shape}; expected (N, C, L) sequences or (N, C, H, W) grids",
            hint="a univariate series of shape (N, L) is reshaped to (N, 1, L) when read from .npz",
        )
    if len(x) == 0:
        raise DataError(f"{_describe(where, 'x')} is empty: the split has no samples")
    if len(x) != len(y):
        raise DataError(f"{where}: x has {len(x)} samples but y has {len(y)}; expected one target per sample")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise DataError(f"{_describe(where, 'x')} has dtype {x.dtype}; expected real numbers")
    if not np.isfinite(x).all():
        raise DataError(f"{_describe(where, 'x')} contains NaN or inf ({int((~np.isfinite(x)).sum())} values)")
    if np.issubdtype(y.dtype, np.number) and not np.isfinite(y).all():
        raise DataError(f"{_describe(where, 'y')} contains NaN or inf ({int((~np.isfinite(y)).sum())} values)")
    if mask is not None and (mask.shape != (x.shape[0], x.shape[-1]) or x.ndim != 3):
        raise DataError(
            f"{_describe(where, 'mask')} has shape {mask.shape}; expected (N, L) = {(x.shape[0], x.shape[-1])}"
        )
    if task_type is None:
        return
    if task_type in CLASSIFICATION:
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(
                f"{_describe(where, 'y')} has shape {y.shape} and dtype {y.dtype}; expected integer labels (N,)"
            )
        if y.min() < 0:
            raise DataError(f"{_describe(where, 'y')} holds the negative label {int(y.min())}; expected labels 0..K-1")
    elif task_type == "multilabel":
        if y.ndim != 2 or not np.isin(y, (0, 1)).all():
            raise DataError(f"{_describe(where, 'y')} has shape {y.shape}; expected a 0/1 matrix (N, K) for multilabel")
    elif task_type == "regression":
        if y.ndim not in (1, 2):
            raise DataError(f"{_describe(where, 'y')} has shape {y.shape}; expected (N,) or (N, D) for regression")
    elif task_type == "field":
        if y.ndim != x.ndim or y.shape[2:] != x.shape[2:]:
            raise DataError(
                f"{_describe(where, 'y')} has shape {y.shape}; a dense field target needs the input's spatial "
                f"shape, (N, C_out, {', '.join(map(str, x.shape[2:]))})"
            )
    else:
        raise DataError(f"{where}: unknown task type {task_type!r}; expected one of {', '.join(TASK_TYPES)}")


def infer_task_type(x: np.ndarray, y: np.ndarray) -> str:
    """Guess the task type from the targets' dtype and shape (``data.task_type`` overrides it).

    Integer (N,) -> binary (2 labels) or multiclass; integer or bool 0/1 (N, K) -> multilabel;
    floats with the input's spatial shape -> field; other floats -> regression.
    """
    if y.dtype == bool or np.issubdtype(y.dtype, np.integer):
        if y.ndim == 1:
            return "binary" if len(np.unique(y)) <= 2 else "multiclass"
        if y.ndim == 2 and np.isin(y, (0, 1)).all():
            return "multilabel"
    if y.ndim == x.ndim and y.shape[2:] == x.shape[2:]:
        return "field"
    return "regression"


class UnstratifiedSplit(UserWarning):
    """Classes too small for a stratified carve: the split was drawn across classes instead."""


def train_val_split(
    split: Split, val_fraction: float, seed: int, stratify: bool, what: str = "validation"
) -> tuple[Split, Split]:
    """Carve a ``what`` split ("validation" or "test") of ``val_fraction`` of the samples out of ``split``.

    Stratified by ``groups`` when ``stratify``: each class gives round(n_c * val_fraction) samples.
    When some class is too small for that (its share rounds to none or to all of it), the carve
    is drawn across classes instead, keeping at least one sample of each class in training, and
    :class:`UnstratifiedSplit` is warned. The permutation depends only on ``seed``.

    Raises:
        DataError: no such split can be made (too few samples, or one sample per class).
    """
    rng = np.random.default_rng(seed)
    n = len(split)
    if stratify:
        assert split.groups is not None
        per_class = [np.flatnonzero(split.groups == label) for label in np.unique(split.groups)]
        for idx in per_class:
            rng.shuffle(idx)
        shares = [int(round(len(idx) * val_fraction)) for idx in per_class]
        if all(0 < k < len(idx) for k, idx in zip(shares, per_class, strict=True)):
            val = np.sort(np.concatenate([idx[:k] for k, idx in zip(shares, per_class, strict=True)]))
        else:
            val = _carve_across_classes(per_class, val_fraction, what, rng)
    else:
        n_val = int(round(n * val_fraction))
        if n_val == 0 or n_val == n:
            raise DataError(
                f"{n} training samples are too few to carve a {what} share of {val_fraction}", hint=_carve_hint(what)
            )
        val = np.sort(rng.permutation(n)[:n_val])
    train = rng.permutation(np.setdiff1d(np.arange(n), val))
    return split.take(train), split.take(val)


def _carve_hint(what: str) -> str:
    if what == "test":
        return "supply x_test/y_test, or change data.test_fraction"
    return "supply x_val/y_val, or change prepare.val_fraction"


def _carve_across_classes(
    per_class: list[np.ndarray], fraction: float, what: str, rng: np.random.Generator
) -> np.ndarray:
    """round(N * fraction) samples (at least 1) drawn at random, never a class's last training sample.

    Each array of ``per_class`` holds one class's sample indices, already shuffled: its first
    index stays in training, so every class can still be learnt; the rest form the pool.
    """
    n = sum(len(idx) for idx in per_class)
    pool = np.concatenate([idx[1:] for idx in per_class])
    if len(pool) == 0:
        raise DataError(
            f"each of the {n} training samples is the only one of its class: no {what} split can be carved "
            "without removing a class from training",
            hint=_carve_hint(what),
        )
    k = min(max(1, int(round(n * fraction))), len(pool))
    sizes = [len(idx) for idx in per_class]
    small = sum(int(round(s * fraction)) in (0, s) for s in sizes)
    arrays = "x_test/y_test" if what == "test" else "x_val/y_val"
    warnings.warn(
        f"{small} of {len(per_class)} classes are too small (smallest: {min(sizes)} samples) for a stratified "
        f"{what} share of {fraction}; carved {k} of {n} samples at random across classes instead, keeping at "
        f"least one sample of every class in training (supply {arrays} to choose them yourself)",
        UnstratifiedSplit,
        stacklevel=3,
    )
    return np.sort(rng.choice(pool, size=k, replace=False))


def subsample(split: Split, n: int | None, rng: np.random.Generator) -> Split:
    """At most ``n`` samples, drawn without replacement (all of them when ``n`` is None)."""
    if n is None or n >= len(split):
        return split
    return split.take(np.sort(rng.choice(len(split), n, replace=False)))


def fit_normalisation(x: np.ndarray, mask: np.ndarray | None = None) -> dict[str, list[float]]:
    """Per-channel mean and std of training inputs over samples and positions (padding excluded).

    The std is floored to avoid division by 0.
    """
    moved = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]).astype(np.float64)  # (N * positions, C)
    if mask is not None:
        moved = moved[mask.reshape(-1)]
    mean = moved.mean(axis=0)
    std = np.maximum(moved.std(axis=0), 1e-6)
    return {"mean": mean.tolist(), "std": std.tolist()}


def apply_normalisation(x: np.ndarray, stats: dict[str, list[float]], mask: np.ndarray | None = None) -> np.ndarray:
    """Standardise inputs channel-wise with stats from :func:`fit_normalisation`; padding stays 0."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = np.asarray(stats["mean"], dtype=np.float32).reshape(shape)
    std = np.asarray(stats["std"], dtype=np.float32).reshape(shape)
    out = (x - mean) / std
    if mask is not None:
        out = out * mask[:, None, :]
    return out.astype(np.float32)


def kmeans(z: np.ndarray, k: int, seed: int, iters: int = 50) -> np.ndarray:
    """k-means centroids (k', D) of the rows of ``z`` (k-means++ start, Lloyd steps; k' <= k).

    Used for the pseudo-labels that let FLD group non-classification targets.
    """
    rng = np.random.default_rng(seed)
    z = z.astype(np.float64)
    k = min(k, len(np.unique(z, axis=0)))
    centres = [z[rng.integers(len(z))]]
    for _ in range(1, k):
        d2 = ((z[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1).min(axis=1)
        centres.append(z[rng.choice(len(z), p=d2 / d2.sum())])
    c = np.asarray(centres)
    for _ in range(iters):
        labels = assign_clusters(z, c)
        new = np.stack([z[labels == j].mean(axis=0) if (labels == j).any() else c[j] for j in range(len(c))])
        if np.allclose(new, c):
            break
        c = new
    return c


def assign_clusters(z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre for each row of ``z`` (int64)."""
    d2 = (z.astype(np.float64) ** 2).sum(1)[:, None] - 2 * z @ centres.T + (centres**2).sum(1)[None]
    return d2.argmin(axis=1).astype(np.int64)


def save_split(path: str | Path, split: Split) -> None:
    """Write a split as ``.npz`` (``x``, ``y``, ``groups`` and, if any, ``mask``), atomically."""
    arrays = {"x": split.x, "y": split.y}
    if split.groups is not None:
        arrays["groups"] = split.groups
    if split.mask is not None:
        arrays["mask"] = split.mask
    save_npz(path, **arrays)


def load_split(path: str | Path) -> Split:
    """Read a split written by :func:`save_split` (never unpickles)."""
    path = Path(path)
    arrays = read_npz(path, hint="run the prepare stage again")
    for key in ("x", "y"):
        if key not in arrays:
            raise DataError(f"split {path} has no array {key!r}", hint="run the prepare stage again")
    split = Split(arrays["x"], arrays["y"], arrays.get("groups"), arrays.get("mask"))
    validate_arrays(split.x, split.y, str(path), mask=split.mask)
    return split


def with_groups(split: Split, groups: np.ndarray) -> Split:
    """The same split with new FLD groups."""
    return replace(split, groups=groups.astype(np.int64))


@dataclass(frozen=True)
class PreparedMeta:
    """The prepare stage's ``meta.json``: what every later stage knows about the prepared task."""

    task: str
    task_type: str
    metric: str
    higher_is_better: bool
    source: str
    class_names: list[str]  # classification only; [] otherwise
    n_classes: int  # 0 for real-valued targets
    n_out: int  # the head's outputs
    input_shape: list[int]  # one sample's, without the batch axis
    target_shape: list[int]
    masked: bool  # variable-length sequences, right-padded, with a mask
    sizes: dict[str, int]  # samples per split
    group_counts: dict[str, list[int]]  # FLD groups (classes or pseudo-labels) per split; not test
    target_stats: dict | None  # regression: the training targets' mean and std per output
    normalisation: dict  # the input normalisation fitted on the training inputs
    difference_stds: list[float] | None  # sequences: spreads of the input and its differences
    augment_rc: bool  # the task supports reverse-complement augmentation (DNA)

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def read(cls, path: str | Path) -> PreparedMeta:
        """Read ``meta.json``; a missing or malformed file or key is a :class:`DataError` naming it."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"{path} is missing or not JSON ({exc})", hint="run the prepare stage again") from exc
        if not isinstance(raw, dict):
            raise DataError(f"{path} is not a JSON object", hint="run the prepare stage again")
        raw.setdefault("difference_stds", None)  # written by prepare since model.derivatives exists
        missing = [f.name for f in fields(cls) if f.name not in raw]
        if missing:
            raise DataError(f"{path} lacks {', '.join(missing)}", hint="run the prepare stage again")
        return cls(**{f.name: raw[f.name] for f in fields(cls)})


def write_meta(path: str | Path, meta: PreparedMeta) -> None:
    """Write the prepared data's metadata (task type, shapes, classes, normalisation)."""
    write_json(path, meta.to_json())


@dataclass(frozen=True)
class RawTask:
    """A task's arrays before validation is carved out of training data.

    Attributes:
        train: training split (``groups`` unset).
        test: test split, or ``None`` when the source ships one pool (prepare carves it).
        val: a validation split the source ships (usually ``None``: prepare carves it).
        class_names: name of each label index (classification), else ``()``.
        task_type: set by loaders that know it; ``None`` means infer from the arrays.
    """

    train: Split
    test: Split | None
    val: Split | None = None
    class_names: tuple[str, ...] = ()
    task_type: str | None = None


Loader = Callable[[Path, Any], RawTask]
