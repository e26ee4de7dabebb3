"""The registered tasks' loaders: each reads its extracted asset (or generates its data) into a
:class:`~components.data.RawTask`. :data:`components.tasks.TASKS` names them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from components.data import RawTask, Split
from components.errors import DataError

__all__ = [
    "ECG_WINDOW",
    "read_fasta",
    "one_hot_dna",
    "load_dna",
    "load_peptides",
    "load_motion",
    "load_vowels",
    "load_tecator",
    "load_ecg",
    "load_darcy",
    "load_burgers",
    "load_advection",
    "load_diffusion_reaction",
]

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


def load_dna(root: Path, data: Any) -> RawTask:
    """Oct4 (label 1: ``sample*.fa``) against Mafk (label 0: ``sample2*.fa``) peaks."""
    del data

    def pair(pos_file: str, neg_file: str) -> Split:
        pos = read_fasta(root / pos_file)
        neg = read_fasta(root / neg_file)
        x = one_hot_dna(pos + neg, source=f"{root / pos_file} + {root / neg_file}")
        y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.int64)
        return Split(x, y)

    return RawTask(
        train=pair("sample.fa", "sample2.fa"),
        test=pair("sample_test.fa", "sample2_test.fa"),
        class_names=("Mafk", "Oct4"),
    )


def load_peptides(root: Path, data: Any) -> RawTask:
    """modlamp AMP (1) vs UniProt (0) peptides, one-hot over 20 amino acids, padded and masked.

    The set repeats sequences (4,642 distinct of 5,200, 22 under both labels): duplicates are
    dropped and contradictory sequences removed before any split, so no test sequence is seen in
    training. The source ships no test split; prepare carves one.
    """
    from components.readers import one_hot_protein, read_amp

    del data
    seqs, y, class_names = read_amp(root / "AMPvsUniProt.csv")
    labels: dict[str, set[int]] = {}
    for seq, label in zip(seqs, y.tolist(), strict=True):
        labels.setdefault(seq, set()).add(label)
    keep = sorted(s for s, ls in labels.items() if len(ls) == 1)  # sorted: independent of file order
    x, mask = one_hot_protein(keep)
    y = np.array([labels[s].pop() for s in keep], dtype=np.int64)
    return RawTask(train=Split(x, y, mask=mask), test=None, class_names=class_names)


def _uea_task(root: Path, name: str) -> RawTask:
    """A UEA multivariate set from its ``_TRAIN.ts`` / ``_TEST.ts`` files, padded to one length."""
    from components.readers import read_ts

    train, test = read_ts(root / f"{name}_TRAIN.ts"), read_ts(root / f"{name}_TEST.ts")
    length = max(train.x.shape[-1], test.x.shape[-1])
    index = {c: i for i, c in enumerate(train.class_names)}

    def split(ts) -> Split:
        pad = length - ts.x.shape[-1]
        x = np.pad(ts.x, ((0, 0), (0, 0), (0, pad)))
        mask = np.pad(ts.mask, ((0, 0), (0, pad)))
        y = np.array([index[c] for c in ts.labels], dtype=np.int64)
        return Split(x, y, mask=None if mask.all() else mask)

    return RawTask(train=split(train), test=split(test), class_names=tuple(train.class_names))


def load_motion(root: Path, data: Any) -> RawTask:
    """BasicMotions: 6-axis accelerometer and gyroscope, 100 steps, 4 activities (40 + 40 cases)."""
    del data
    return _uea_task(root, "BasicMotions")


def load_vowels(root: Path, data: Any) -> RawTask:
    """JapaneseVowels: 12 LPC cepstra over 7..29 frames (padded to 29 and masked), 9 speakers."""
    del data
    return _uea_task(root, "JapaneseVowels")


def load_tecator(root: Path, data: Any) -> RawTask:
    """Tecator: near-infrared absorbance spectra (850-1050 nm, 100 channels) of meat -> fat (%).

    The spectrum is one channel of 100 steps; the target is the fat content measured by chemical
    analysis. The files hold 172 training and 43 test cases, with exact repeats: 14 training
    spectra repeat another training spectrum, and 8 repeat a test spectrum (same fat value each
    time). Training keeps the first copy of each spectrum that is not in the test split: 150 cases.
    """
    from components.readers import read_ts

    del data

    def split(name: str) -> Split:
        ts = read_ts(root / name)
        return Split(ts.x, ts.labels.astype(np.float32))

    train, test = split("Tecator_TRAIN.ts"), split("Tecator_TEST.ts")
    seen = {row.tobytes() for row in test.x}
    keep = []
    for i, row in enumerate(train.x):
        if (key := row.tobytes()) not in seen:
            seen.add(key)
            keep.append(i)
    return RawTask(train=train.take(np.asarray(keep)), test=test, task_type="regression")


#: ECG window length in steps (MIT-BIH is sampled at 360 Hz: 10 steps is 28 ms).
ECG_WINDOW = 10


def load_ecg(root: Path, data: Any) -> RawTask:
    """sktime's ``mitdb.csv``: one 7,500-step ECG record with a 0/1 anomaly label per step.

    The record holds one anomalous episode (352 steps). It is cut into non-overlapping windows of
    :data:`ECG_WINDOW` steps (no step is shared between windows, so none leaks across splits);
    a window is anomalous (1) when most of its steps are. About 5% of windows are positive, so
    the task is imbalanced; prepare carves a stratified test split.
    """
    from components.readers import read_mitdb

    del data
    x, y = read_mitdb(root / "mitdb.csv")
    n = x.shape[-1] // ECG_WINDOW
    windows = x[0, :, : n * ECG_WINDOW].reshape(1, n, ECG_WINDOW).transpose(1, 0, 2)  # (n, 1, W)
    labels = (y[0, : n * ECG_WINDOW].reshape(n, ECG_WINDOW).mean(axis=1) > 0.5).astype(np.int64)
    return RawTask(train=Split(np.ascontiguousarray(windows), labels), test=None, class_names=("normal", "anomaly"))


def load_darcy(root: Path, data: Any) -> RawTask:
    """neuraloperator's Darcy flow at 16 x 16: binary permeability (1, 16, 16) -> pressure (1, 16, 16).

    1,000 training and 50 test cases (``darcy_test_16.pt``).
    """
    from components.readers import read_neuralop_pt

    del data

    def split(name: str) -> Split:
        arrays = read_neuralop_pt(root / name, keys=("x", "y"))
        return Split(arrays["x"].astype(np.float32)[:, None], arrays["y"].astype(np.float32)[:, None])

    return RawTask(train=split("darcy_train_16.pt"), test=split("darcy_test_16.pt"), task_type="field")


def load_burgers(root: Path, data: Any) -> RawTask:
    """neuraloperator's low-resolution Burgers (viscosity 0.01): u0 (1, 16) -> u(t, x) (16, 16).

    ``output[:, 0]`` is the initial condition itself, so the target is the 16 later time steps,
    one per output channel. 1,200 cases and no test split: prepare carves one.
    """
    from components.readers import read_neuralop_pt

    arrays = read_neuralop_pt(root / "burgers_lowres.pt", keys=("input", "output"))
    del data
    x = arrays["input"].astype(np.float32)[:, None]
    y = arrays["output"][:, 1:].astype(np.float32)
    return RawTask(train=Split(x, y), test=None, task_type="field")


def load_advection(root: Path, data: Any) -> RawTask:
    """PDEBench 1D advection (beta = 0.4, periodic): exact solutions of random initial conditions."""
    from components.pde import generate_advection

    del root
    x, y = generate_advection(
        data.n_samples, data.resolution, data.generator_seed, t_final=data.t_final or 2.0, n_snapshots=data.n_snapshots
    )
    return RawTask(train=Split(x, y), test=None, task_type="field")


def load_diffusion_reaction(root: Path, data: Any) -> RawTask:
    """PDEBench 1D diffusion-reaction (nu = 0.5, rho = 1.0, periodic), solved by Strang splitting."""
    from components.pde import generate_diffusion_reaction

    del root
    x, y = generate_diffusion_reaction(
        data.n_samples,
        data.resolution,
        data.generator_seed,
        t_final=data.t_final or 0.1,
        n_snapshots=data.n_snapshots,
    )
    return RawTask(train=Split(x, y), test=None, task_type="field")
