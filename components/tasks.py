"""Target tasks: a registry of loaders that turn extracted assets (or generators) into arrays.

Adding a task is one loader function (in components/task_loaders.py) plus its entry in
:data:`TASKS`. A user's own
data needs no entry: ``npz:PATH`` and ``pdebench:PATH`` name a file, and :func:`get_task` builds
the spec on the fly.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from components.data import (
    CLASSIFICATION,
    TASK_TYPES,
    Loader,
    RawTask,
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
from components.task_loaders import (
    ECG_WINDOW,
    load_advection,
    load_burgers,
    load_darcy,
    load_diffusion_reaction,
    load_dna,
    load_ecg,
    load_motion,
    load_peptides,
    load_tecator,
    load_vowels,
)
from components.user_data import USER_FILE, USER_READERS, load_user_npz, load_user_pdebench

__all__ = [
    "TaskSpec",
    "TASKS",
    "DEFAULT_METRIC",
    "get_task",
    "task_slug",
    "resolve_task_type",
    "preflight",
    "check_raw",
    "prepare_splits",
]

#: The headline metric of each task type when a task does not name its own.
DEFAULT_METRIC = {
    "binary": "accuracy",
    "multiclass": "accuracy",
    "multilabel": "f1",
    "regression": "rmse",
    "field": "nrmse",
}


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
        asset: the registered asset (``components.asset_registry.ASSETS``) holding the raw files, or
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
    raw = USER_READERS[kind](spec.user_file, data)
    task_type = resolve_task_type(spec, raw, data.task_type)
    check_raw(raw, str(spec.user_file), task_type)
    return task_type


TASKS: dict[str, TaskSpec] = {
    "dna": TaskSpec(
        loader=load_dna,
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
        loader=load_peptides,
        task_type="binary",
        metric="accuracy",
        modality="protein",
        shapes="20 x 7..174 (masked) -> 2 classes",
        source="modlamp 4.3.3: AMP vs UniProt peptides, 7-174 aa (deduplicated)",
        asset="modlamp-amp",
        normalise=False,
    ),
    "ecg": TaskSpec(
        loader=load_ecg,
        task_type="binary",
        metric="f1",
        modality="ECG",
        shapes="1 x 10 -> 2 classes (5% positive)",
        source=f"sktime 1.2.0 mitdb.csv: one MIT-BIH record, {ECG_WINDOW}-step windows, anomaly vs normal",
        asset="mitdb",
        released_epochs=15,
    ),
    "motion": TaskSpec(
        loader=load_motion,
        task_type="multiclass",
        metric="accuracy",
        modality="motion sensors",
        shapes="6 x 100 -> 4 classes",
        source="sktime 1.2.0 UEA BasicMotions: 6 x 100, 4 classes",
        asset="basic-motions",
    ),
    "vowels": TaskSpec(
        loader=load_vowels,
        task_type="multiclass",
        metric="accuracy",
        modality="speech features",
        shapes="12 x 7..29 (masked) -> 9 classes",
        source="sktime 1.2.0 UEA JapaneseVowels: 12 x 7..29 (padded, masked), 9 classes",
        asset="japanese-vowels",
    ),
    "tecator": TaskSpec(
        loader=load_tecator,
        task_type="regression",
        metric="rmse",
        modality="NIR spectroscopy",
        shapes="1 x 100 -> fat (%)",
        source="sktime 1.2.0 Tecator: 100-channel absorbance spectra -> fat content, 150 / 43 cases (deduplicated)",
        asset="tecator",
    ),
    "darcy": TaskSpec(
        loader=load_darcy,
        task_type="field",
        metric="rel_l2",
        modality="PDE field (2D)",
        shapes="1 x 16 x 16 -> 1 x 16 x 16",
        source="neuraloperator 0.3.0 darcy_train_16.pt / darcy_test_16.pt",
        asset="neuralop-darcy",
        released_epochs=100,
    ),
    "burgers": TaskSpec(
        loader=load_burgers,
        task_type="field",
        metric="nrmse",
        modality="PDE field (1D to space-time)",
        shapes="1 x 16 -> 16 x 16 (t, x)",
        source="neuraloperator 0.3.0 burgers_lowres.pt: u0 -> u(t, x), 16 x 16",
        asset="neuralop-burgers",
        released_epochs=200,
    ),
    "advection": TaskSpec(
        loader=load_advection,
        task_type="field",
        metric="nrmse",
        modality="PDE field (1D)",
        shapes="1 x resolution -> n_snapshots x resolution",
        source="generated: PDEBench 1D advection, beta=0.4, periodic, closed form",
        released_epochs=200,
    ),
    "diffusion_reaction": TaskSpec(
        loader=load_diffusion_reaction,
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
        loader = load_user_npz if kind == "npz" else load_user_pdebench
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
