"""Target tasks: a registry of loaders that turn extracted assets (or generators) into arrays.

Adding a task is one registered loader function plus its entry in :data:`TASKS`. A user's own
data needs no entry: ``npz:PATH`` and ``pdebench:PATH`` name a file, and :func:`get_task` builds
the spec on the fly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from components.data import (
    CLASSIFICATION,
    TASK_TYPES,
    Split,
    apply_normalisation,
    assign_clusters,
    fit_normalisation,
    infer_task_type,
    kmeans,
    subsample,
    train_val_split,
    validate_arrays,
    with_groups,
)
from components.errors import DataError, UserError
from components.npzfile import read_npz

__all__ = [
    "RawTask",
    "TaskSpec",
    "TASKS",
    "DEFAULT_METRIC",
    "USER_FILE",
    "get_task",
    "task_slug",
    "resolve_task_type",
    "preflight",
    "load_pdebench",
    "check_raw",
    "prepare_splits",
    "load_npz",
    "read_fasta",
    "one_hot_dna",
]

#: The headline metric of each task type when a task does not name its own.
DEFAULT_METRIC = {
    "binary": "accuracy",
    "multiclass": "accuracy",
    "multilabel": "f1",
    "regression": "rmse",
    "field": "nrmse",
}

#: Name of a user's file once the assets stage has copied it into the target asset directory.
USER_FILE = {"npz": "data.npz", "pdebench": "data.hdf5"}


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


@dataclass(frozen=True)
class TaskSpec:
    """How to get and judge one task.

    Attributes:
        loader: ``loader(asset_dir, data_params)`` reads the extracted asset directory (or
            generates the data from ``params.data``) into a :class:`RawTask`.
        task_type: one of ``TASK_TYPES`` (it picks the head, the loss and the metrics), or ``None``
            to infer it from the arrays (user data).
        metric: the headline metric, used for model selection and reporting (``None``: the task
            type's default).
        modality: a word for humans (``recraft tasks``).
        source: where the data comes from, for humans.
        shapes: input and target shapes, for humans (``C x L -> K classes``).
        asset: the registered asset (``components.assets.ASSETS``) holding the raw files, or
            ``None`` for generated data and user files.
        user_file: a user's file, copied into the target asset directory by the assets stage.
        stored_as: the name of that copy (what the loader reads).
        normalise: standardise inputs channel-wise with train statistics (off for one-hot data).
        augment_rc: reverse-complement augmentation applies (one-hot DNA in A, C, G, T order).
        released_epochs: stage-2 epochs of the released RECRAFT code's configuration for this
            task's counterpart (DeepSEA for ``dna``, PDEBench for the fields), which
            ``recraft run --budget released`` uses; ``None`` where the released code has none.
    """

    loader: Loader
    task_type: str | None
    metric: str | None
    modality: str
    source: str
    shapes: str = "inferred from the file"
    asset: str | None = None
    user_file: Path | None = None
    stored_as: str | None = None
    normalise: bool = True
    augment_rc: bool = False
    released_epochs: int | None = None

    def resolved(self, task_type: str) -> TaskSpec:
        """This spec with a concrete task type and metric."""
        return replace(self, task_type=task_type, metric=self.metric or DEFAULT_METRIC[task_type])


# ---------------------------------------------------------------- validation


def check_raw(raw: RawTask, where: str, task_type: str) -> None:
    """Refuse a task whose splits cannot be trained and judged; messages name ``where`` and the split.

    Checks each split's arrays, that the splits agree on input and target shapes, that a
    classification task has at least two classes in training, and that no validation or test
    label is missing from training.
    """
    splits = {"train": raw.train, "val": raw.val, "test": raw.test}
    for name, split in splits.items():
        if split is not None:
            validate_arrays(split.x, split.y, f"{where} ({name})", task_type, split.mask)
    ref = raw.train
    for name, split in splits.items():
        if split is None or name == "train":
            continue
        if split.x.shape[1:] != ref.x.shape[1:] and split.mask is None:
            raise DataError(
                f"{where} ({name}): array 'x' has samples of shape {split.x.shape[1:]}; "
                f"training samples have shape {ref.x.shape[1:]}"
            )
        if task_type not in CLASSIFICATION and split.y.shape[1:] != ref.y.shape[1:]:
            raise DataError(
                f"{where} ({name}): array 'y' has targets of shape {split.y.shape[1:]}; "
                f"training targets have shape {ref.y.shape[1:]}"
            )
    if task_type in CLASSIFICATION:
        seen = np.unique(ref.y)
        if len(seen) < 2:
            raise DataError(f"{where} (train): array 'y' holds a single class ({int(seen[0])}); expected at least 2")
        for name, split in splits.items():
            if split is not None and name != "train":
                unseen = np.setdiff1d(np.unique(split.y), seen)
                if len(unseen):
                    raise DataError(
                        f"{where} ({name}): array 'y' holds labels {unseen.tolist()[:10]} that never occur in "
                        "training; a model cannot learn them"
                    )


# ---------------------------------------------------------------- splits


def _pseudo_labels(splits: dict[str, Split], k: int, seed: int) -> dict[str, Split]:
    """FLD groups for targets without classes: k-means fitted on flattened training targets."""
    flat = {n: s.y.reshape(len(s), -1).astype(np.float64) for n, s in splits.items()}
    centres = kmeans(flat["train"], k, seed)
    return {n: with_groups(s, assign_clusters(flat[n], centres)) for n, s in splits.items()}


def prepare_splits(
    raw: RawTask, spec: TaskSpec, data: Any, cfg: Any, seed: int
) -> tuple[dict[str, Split], dict[str, list[float]]]:
    """Train, val and test splits with FLD groups, normalised with training statistics.

    A missing test split is carved first with the fixed ``data.split_seed`` (every run seed is
    judged on the same test set); validation is then carved from training data with the run
    ``seed``. Both are stratified by class for classification (drawn across classes, with a
    warning, where a class is too small: :func:`train_val_split`). Groups are the class labels, or
    k-means pseudo-labels (``cfg.n_pseudo_labels``) of the targets for other task types.

    Args:
        raw: the loaded task, already checked with :func:`check_raw`.
        spec: the task, resolved to a concrete type (:meth:`TaskSpec.resolved`).
        data: ``params.data``; cfg: ``params.prepare``; seed: the run seed.

    Returns:
        The splits by name, and the input normalisation statistics (fitted on train).
    """
    classify = spec.task_type in CLASSIFICATION
    grouped = (lambda s: with_groups(s, s.y)) if classify else (lambda s: s)
    train, test, val = grouped(raw.train), raw.test, raw.val
    if test is None:
        train, test = train_val_split(train, data.test_fraction, data.split_seed, stratify=classify, what="test")
    if val is None:
        train, val = train_val_split(train, cfg.val_fraction, seed, stratify=classify)
    rng = np.random.default_rng(seed)
    splits = {
        "train": subsample(train, cfg.max_train, rng),
        "val": grouped(val),
        "test": grouped(subsample(test, cfg.max_test, rng)),
    }
    if not classify:
        splits = _pseudo_labels(splits, cfg.n_pseudo_labels, seed)
    stats = fit_normalisation(splits["train"].x, splits["train"].mask)
    if spec.normalise:
        splits = {n: Split(apply_normalisation(s.x, stats, s.mask), s.y, s.groups, s.mask) for n, s in splits.items()}
    return splits, stats


# ---------------------------------------------------------------- user data


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


_USER_READERS: dict[str, Callable[[Path, Any], RawTask]] = {
    "npz": lambda path, data: load_npz(path),
    "pdebench": load_pdebench,
}


def _load_user_npz(root: Path, data: Any) -> RawTask:
    return _USER_READERS["npz"](root / USER_FILE["npz"], data)


def _load_user_pdebench(root: Path, data: Any) -> RawTask:
    return _USER_READERS["pdebench"](root / USER_FILE["pdebench"], data)


def preflight(spec: TaskSpec, data: Any) -> str | None:
    """Read and check a user's file where it lies, before any stage runs.

    Returns the task type (``None`` for registered tasks, which are not read here).

    Raises:
        DataError: the file cannot be read or its arrays fail :func:`check_raw`.
    """
    if spec.user_file is None:
        if data.task_type is not None and spec.task_type is not None and data.task_type != spec.task_type:
            raise UserError(f"data.task_type={data.task_type!r} contradicts the task, which is {spec.task_type!r}")
        return None
    kind = next(k for k, name in USER_FILE.items() if name == spec.stored_as)
    raw = _USER_READERS[kind](spec.user_file, data)
    task_type = resolve_task_type(spec, raw, data.task_type)
    check_raw(raw, str(spec.user_file), task_type)
    return task_type


# ---------------------------------------------------------------- dna


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


def _load_dna(root: Path, data: Any) -> RawTask:
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


# ---------------------------------------------------------------- proteins, sensors, ECG


def _load_peptides(root: Path, data: Any) -> RawTask:
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


def _load_motion(root: Path, data: Any) -> RawTask:
    """BasicMotions: 6-axis accelerometer and gyroscope, 100 steps, 4 activities (40 + 40 cases)."""
    del data
    return _uea_task(root, "BasicMotions")


def _load_vowels(root: Path, data: Any) -> RawTask:
    """JapaneseVowels: 12 LPC cepstra over 7..29 frames (padded to 29 and masked), 9 speakers."""
    del data
    return _uea_task(root, "JapaneseVowels")


def _load_tecator(root: Path, data: Any) -> RawTask:
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


def _load_ecg(root: Path, data: Any) -> RawTask:
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


# ---------------------------------------------------------------- PDE fields


def _load_darcy(root: Path, data: Any) -> RawTask:
    """neuraloperator's Darcy flow at 16 x 16: binary permeability (1, 16, 16) -> pressure (1, 16, 16).

    1,000 training and 50 test cases (``darcy_test_16.pt``).
    """
    from components.readers import read_neuralop_pt

    del data

    def split(name: str) -> Split:
        arrays = read_neuralop_pt(root / name, keys=("x", "y"))
        return Split(arrays["x"].astype(np.float32)[:, None], arrays["y"].astype(np.float32)[:, None])

    return RawTask(train=split("darcy_train_16.pt"), test=split("darcy_test_16.pt"), task_type="field")


def _load_burgers(root: Path, data: Any) -> RawTask:
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


# ---------------------------------------------------------------- generated PDEs


def _load_advection(root: Path, data: Any) -> RawTask:
    """PDEBench 1D advection (beta = 0.4, periodic): exact solutions of random initial conditions."""
    from components.pde import generate_advection

    del root
    x, y = generate_advection(
        data.n_samples, data.resolution, data.generator_seed, t_final=data.t_final or 2.0, n_snapshots=data.n_snapshots
    )
    return RawTask(train=Split(x, y), test=None, task_type="field")


def _load_diffusion_reaction(root: Path, data: Any) -> RawTask:
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


TASKS: dict[str, TaskSpec] = {
    "dna": TaskSpec(
        loader=_load_dna,
        task_type="binary",
        metric="accuracy",
        modality="DNA",
        shapes="4 x 200 -> 2 classes",
        source="janggu 0.10.2: Oct4 vs Mafk ChIP-seq peaks, 200 bp",
        asset="janggu-dna",
        normalise=False,
        augment_rc=True,
        released_epochs=13,
    ),
    "peptides": TaskSpec(
        loader=_load_peptides,
        task_type="binary",
        metric="accuracy",
        modality="protein",
        shapes="20 x 7..174 (masked) -> 2 classes",
        source="modlamp 4.3.3: AMP vs UniProt peptides, 7-174 aa (deduplicated)",
        asset="modlamp-amp",
        normalise=False,
    ),
    "ecg": TaskSpec(
        loader=_load_ecg,
        task_type="binary",
        metric="f1",
        modality="ECG",
        shapes="1 x 10 -> 2 classes (5% positive)",
        source=f"sktime 1.2.0 mitdb.csv: one MIT-BIH record, {ECG_WINDOW}-step windows, anomaly vs normal",
        asset="mitdb",
        released_epochs=15,
    ),
    "motion": TaskSpec(
        loader=_load_motion,
        task_type="multiclass",
        metric="accuracy",
        modality="motion sensors",
        shapes="6 x 100 -> 4 classes",
        source="sktime 1.2.0 UEA BasicMotions: 6 x 100, 4 classes",
        asset="basic-motions",
    ),
    "vowels": TaskSpec(
        loader=_load_vowels,
        task_type="multiclass",
        metric="accuracy",
        modality="speech features",
        shapes="12 x 7..29 (masked) -> 9 classes",
        source="sktime 1.2.0 UEA JapaneseVowels: 12 x 7..29 (padded, masked), 9 classes",
        asset="japanese-vowels",
    ),
    "tecator": TaskSpec(
        loader=_load_tecator,
        task_type="regression",
        metric="rmse",
        modality="NIR spectroscopy",
        shapes="1 x 100 -> fat (%)",
        source="sktime 1.2.0 Tecator: 100-channel absorbance spectra -> fat content, 150 / 43 cases (deduplicated)",
        asset="tecator",
    ),
    "darcy": TaskSpec(
        loader=_load_darcy,
        task_type="field",
        metric="rel_l2",
        modality="PDE field (2D)",
        shapes="1 x 16 x 16 -> 1 x 16 x 16",
        source="neuraloperator 0.3.0 darcy_train_16.pt / darcy_test_16.pt",
        asset="neuralop-darcy",
        released_epochs=100,
    ),
    "burgers": TaskSpec(
        loader=_load_burgers,
        task_type="field",
        metric="nrmse",
        modality="PDE field (1D to space-time)",
        shapes="1 x 16 -> 16 x 16 (t, x)",
        source="neuraloperator 0.3.0 burgers_lowres.pt: u0 -> u(t, x), 16 x 16",
        asset="neuralop-burgers",
        released_epochs=200,
    ),
    "advection": TaskSpec(
        loader=_load_advection,
        task_type="field",
        metric="nrmse",
        modality="PDE field (1D)",
        shapes="1 x resolution -> n_snapshots x resolution",
        source="generated: PDEBench 1D advection, beta=0.4, periodic, closed form",
        released_epochs=200,
    ),
    "diffusion_reaction": TaskSpec(
        loader=_load_diffusion_reaction,
        task_type="field",
        metric="nrmse",
        modality="PDE field (1D)",
        shapes="1 x resolution -> n_snapshots x resolution",
        source="generated: PDEBench 1D diffusion-reaction, nu=0.5, rho=1.0, Strang splitting",
        released_epochs=200,
    ),
}


def task_slug(name: str) -> str:
    """A name safe for directories and model registries: ``npz:/data/mine.npz`` -> ``npz-mine``."""
    kind, sep, rest = name.partition(":")
    if not sep:
        return name
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(rest).stem)
    return f"{kind}-{stem}"


def get_task(name: str) -> TaskSpec:
    """A registered task, or a user's file as ``npz:PATH`` / ``pdebench:PATH``.

    Raises:
        UserError: an unknown name (the message lists the choices) or a missing user file.
    """
    kind, sep, rest = name.partition(":")
    if sep and kind in USER_FILE:
        path = Path(rest).expanduser()
        if not path.is_file():
            raise UserError(f"task {name!r}: the file {path} does not exist", hint=f"expected --task {kind}:PATH")
        loader = _load_user_npz if kind == "npz" else _load_user_pdebench
        return TaskSpec(
            loader=loader,
            task_type=None if kind == "npz" else "field",
            metric=None,
            modality="user data",
            source=str(path),
            user_file=path.resolve(),
            stored_as=USER_FILE[kind],
        )
    if name not in TASKS:
        raise UserError(
            f"unknown task {name!r}; registered tasks: {', '.join(sorted(TASKS))}, or npz:PATH / pdebench:PATH"
        )
    return TASKS[name]


def resolve_task_type(spec: TaskSpec, raw: RawTask, override: str | None) -> str:
    """The task type: the spec's or loader's, else ``override`` (``data.task_type``), else inferred."""
    known = spec.task_type or raw.task_type
    if override is not None:
        if known is not None and override != known:
            raise UserError(f"data.task_type={override!r} contradicts the task, which is {known!r}")
        if override not in TASK_TYPES:
            raise UserError(f"data.task_type={override!r}; expected one of {', '.join(TASK_TYPES)}")
        return override
    return known or infer_task_type(raw.train.x, raw.train.y)
