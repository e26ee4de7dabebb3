"""Target tasks: a registry of loaders that turn extracted assets into arrays.

Adding a task is one registered loader function plus its entry in :data:`TASKS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.errors import DataError, UserError

__all__ = ["RawTask", "TaskSpec", "TASKS", "get_task", "read_fasta", "one_hot_dna"]

TASK_TYPES = ("binary", "multiclass")


@dataclass(frozen=True)
class RawTask:
    """A task's arrays before splitting off validation data.

    Attributes:
        x_train: (N, C, L) float32 inputs.
        y_train: (N,) int64 labels.
        x_test: (M, C, L) float32 inputs.
        y_test: (M,) int64 labels.
        class_names: name of each label index.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class TaskSpec:
    """How to get and judge one task.

    Attributes:
        asset: name of the asset (see ``components.assets.ASSETS``) that holds the raw files.
        loader: reads the extracted asset directory into a :class:`RawTask`.
        task_type: one of ``TASK_TYPES``; it picks the head, the loss and the metrics.
        metric: the headline metric, used for model selection and reporting.
        modality: a word for humans (``recraft tasks``).
        normalise: standardise inputs channel-wise with train statistics (off for one-hot data,
            whose scale is already fixed and whose channels augmentations permute).
        augment_rc: reverse-complement augmentation applies (one-hot DNA in A, C, G, T order).
    """

    asset: str
    loader: Callable[[Path], RawTask]
    task_type: str
    metric: str
    modality: str
    normalise: bool = True
    augment_rc: bool = False


_DNA_INDEX = {"A": 0, "C": 1, "G": 2, "T": 3}


def read_fasta(path: str | Path) -> list[str]:
    """Read the sequences of a FASTA file (headers dropped, multi-line records joined)."""
    path = Path(path)
    seqs: list[str] = []
    current: list[str] = []
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read FASTA file {path}: {exc}") from exc
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            if current:
                seqs.append("".join(current))
            current = []
        else:
            current.append(line.upper())
    if current:
        seqs.append("".join(current))
    if not seqs:
        raise DataError(f"FASTA file {path} holds no sequences")
    return seqs


def one_hot_dna(seqs: list[str], source: str = "sequences") -> np.ndarray:
    """One-hot encode equal-length DNA strings as (N, 4, L) float32 in A, C, G, T order.

    Ambiguous bases (``N`` and other IUPAC codes) become all-zero columns.
    """
    lengths = {len(s) for s in seqs}
    if len(lengths) != 1:
        raise DataError(f"{source}: sequences have unequal lengths {sorted(lengths)[:5]}; expected one length")
    length = lengths.pop()
    codes = np.full((len(seqs), length), -1, dtype=np.int64)
    for i, seq in enumerate(seqs):
        codes[i] = [_DNA_INDEX.get(base, -1) for base in seq]
    out = np.zeros((len(seqs), 4, length), dtype=np.float32)
    n_idx, pos_idx = np.nonzero(codes >= 0)
    out[n_idx, codes[n_idx, pos_idx], pos_idx] = 1.0
    return out


def _load_dna(root: Path) -> RawTask:
    """Oct4 (label 1: ``sample*.fa``) against Mafk (label 0: ``sample2*.fa``) peaks."""

    def pair(pos_file: str, neg_file: str) -> tuple[np.ndarray, np.ndarray]:
        pos = read_fasta(root / pos_file)
        neg = read_fasta(root / neg_file)
        x = one_hot_dna(pos + neg, source=f"{root / pos_file} + {root / neg_file}")
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
        return x, y

    x_train, y_train = pair("sample.fa", "sample2.fa")
    x_test, y_test = pair("sample_test.fa", "sample2_test.fa")
    return RawTask(x_train, y_train, x_test, y_test, class_names=("Mafk", "Oct4"))


TASKS: dict[str, TaskSpec] = {
    "dna": TaskSpec(
        asset="janggu-dna",
        loader=_load_dna,
        task_type="binary",
        metric="accuracy",
        modality="DNA",
        normalise=False,
        augment_rc=True,
    ),
}


def get_task(name: str) -> TaskSpec:
    """Look up a registered task; an unknown name lists the choices."""
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}")
    return TASKS[name]
