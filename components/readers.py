"""Readers for the raw files of the bundled datasets: files in, plain numpy arrays out.

Each reader checks what it reads and raises :class:`~components.errors.DataError` naming the file
(and line or key) and what was expected. Nothing here unpickles: ``.pt`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from pickle import UnpicklingError  # only the exception type torch.load(weights_only=True) raises
from typing import NamedTuple

import numpy as np
import torch

from components.errors import DataError

__all__ = [
    "AMINO_ACIDS",
    "TsData",
    "read_ts",
    "read_mitdb",
    "read_amp",
    "one_hot_protein",
    "read_neuralop_pt",
]

# The 20 standard amino acids, one-letter codes in alphabetical order: the channel order.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
_AA_INDEX = {aa: i for i, aa in enumerate(AMINO_ACIDS)}


class TsData(NamedTuple):
    """A ``.ts`` file's cases, zero-padded to the longest.

    Attributes:
        x: (N, C, L) float32 values; steps past a case's length are 0.
        mask: (N, L) bool, True at a case's real time steps.
        labels: (N,) str class labels as written in the file (a regression file: the targets as
            written).
        class_names: the labels declared by ``@classLabel true ...``, in declared order; empty
            for a regression file (``@targetLabel true``).
    """

    x: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} file {path}: {exc}") from exc


def _parse_ts_header(path: Path, lines: list[str]) -> tuple[dict[str, list[str]], int]:
    """Header tags (lower-cased, without '@') -> their words, and the index of the first data line."""
    tags: dict[str, list[str]] = {}
    for i, raw in enumerate(lines):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("@"):
            raise DataError(
                f"{path}:{i + 1}: got {line[:40]!r} before @data; expected '#' comments and '@tag' header "
                "lines, then a line '@data' (is it missing?), then the cases"
            )
        if len(line) == 1:
            raise DataError(f"{path}:{i + 1}: a bare '@'; expected '@tag value'")
        tag, *words = line[1:].split()
        tag = tag.lower()
        if tag == "data":
            return tags, i + 1
        tags[tag] = words
    raise DataError(f"{path}: no @data line; a .ts file needs its header ended by @data")


def _check_ts_tags(path: Path, tags: dict[str, list[str]]) -> tuple[str, ...] | None:
    """Reject header options this reader does not support; return the declared class names
    (``None`` for a regression file, ``@targetLabel true``)."""
    if tags.get("timestamps", ["false"])[0].lower() == "true":
        raise DataError(f"{path}: @timeStamps true is not supported; expected plain comma-separated values")
    if tags.get("targetlabel", ["false"])[0].lower() == "true":
        return None
    class_label = tags.get("classlabel", [])
    if not class_label or class_label[0].lower() != "true" or len(class_label) < 2:
        raise DataError(
            f"{path}: expected '@classLabel true <label> ...' (classification) or '@targetLabel true' "
            "(regression) in the header"
        )
    return tuple(class_label[1:])


def _parse_ts_case(path: Path, lineno: int, line: str, class_names: tuple[str, ...] | None) -> tuple[np.ndarray, str]:
    """One data line ``c1v1,c1v2,...:c2v1,...:label`` -> ((C, L) float64 values, label).

    ``class_names`` ``None``: a regression file, whose label must be a finite number.
    """
    *channels, label = line.split(":")
    label = label.strip()
    where = f"{path}:{lineno}"
    if not channels:
        raise DataError(f"{where}: expected channels separated by ':' and a class label last, got {line[:40]!r}")
    if class_names is None:
        try:
            if not np.isfinite(float(label)):
                raise ValueError("not finite")
        except ValueError as exc:
            raise DataError(f"{where}: target {label!r} is not a finite number (@targetLabel true)") from exc
    elif label not in class_names:
        raise DataError(f"{where}: label {label!r} is not among the declared classes {list(class_names)}")
    rows = []
    for c, text in enumerate(channels):
        tokens = [t.strip() for t in text.split(",")]
        if "?" in tokens:
            raise DataError(f"{where}: channel {c} has missing values ('?'); this reader expects complete series")
        try:
            rows.append(np.array(tokens, dtype=np.float64))
        except ValueError as exc:
            raise DataError(f"{where}: channel {c} is not a comma-separated list of numbers: {exc}") from exc
    lengths = {len(r) for r in rows}
    if len(lengths) != 1:
        raise DataError(f"{where}: channels have different lengths {sorted(lengths)}; expected one length per case")
    values = np.stack(rows)
    if not np.isfinite(values).all():
        raise DataError(f"{where}: non-finite values (nan or inf); expected finite numbers")
    return values, label


def read_ts(path: str | Path) -> TsData:
    """Read a classification or regression problem in the sktime/UEA ``.ts`` format.

    The format: ``#`` comment lines and ``@tag value`` header lines, then ``@data``, then one
    case per line: channels separated by ``:``, values within a channel by ``,``, the class
    label (or, with ``@targetLabel true``, the numeric target) last. Cases may differ in length
    (``@equalLength false``); they are zero-padded to the longest and ``mask`` marks the real
    steps. Missing values (``?``) and ``@timeStamps true``
    are rejected rather than guessed at.

    Raises:
        DataError: the file is unreadable, has no ``@data``, declares neither class labels nor a
            target, or has a malformed case (the message gives the line number).
    """
    path = Path(path)
    lines = _read_lines(path, ".ts")
    tags, start = _parse_ts_header(path, lines)
    class_names = _check_ts_tags(path, tags)
    cases: list[np.ndarray] = []
    labels: list[str] = []
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line or line.startswith("#"):
            continue
        values, label = _parse_ts_case(path, i + 1, line, class_names)
        if cases and values.shape[0] != cases[0].shape[0]:
            raise DataError(f"{path}:{i + 1}: {values.shape[0]} channels; earlier cases have {cases[0].shape[0]}")
        cases.append(values)
        labels.append(label)
    if not cases:
        raise DataError(f"{path}: no cases after @data")
    _check_ts_declared_shape(path, tags, cases)
    lengths = np.array([c.shape[1] for c in cases])
    x = np.zeros((len(cases), cases[0].shape[0], lengths.max()), dtype=np.float32)
    for n, case in enumerate(cases):
        x[n, :, : case.shape[1]] = case
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    return TsData(x=x, mask=mask, labels=np.array(labels, dtype=str), class_names=class_names or ())


def _check_ts_declared_shape(path: Path, tags: dict[str, list[str]], cases: list[np.ndarray]) -> None:
    """The channel count and (for equal-length files) the length must match the header."""
    n_channels = cases[0].shape[0]
    if "dimensions" in tags and tags["dimensions"] != [str(n_channels)]:
        raise DataError(f"{path}: header says @dimensions {' '.join(tags['dimensions'])}, cases have {n_channels}")
    if tags.get("equallength", ["false"])[0].lower() == "true" and "serieslength" in tags:
        declared = tags["serieslength"][0]
        bad = sorted({c.shape[1] for c in cases if str(c.shape[1]) != declared})
        if bad:
            raise DataError(f"{path}: header says @seriesLength {declared}, but some cases have lengths {bad[:5]}")


def read_mitdb(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read sktime's ``mitdb.csv``: ONE ECG series with a 0/1 anomaly label per time step.

    The file has the header ``data,label`` and one row per time step (not per beat).

    Returns:
        x: (1, 1, L) float32 signal (one case, one channel; the values are in mV).
        y: (1, L) int64 per-step labels (1 = annotated anomaly).

    Raises:
        DataError: unreadable file, wrong header, a row without exactly two columns, or a value
            that does not parse (the message gives the line number).
    """
    path = Path(path)
    lines = [line.strip() for line in _read_lines(path, "CSV")]
    if not lines or lines[0].replace(" ", "") != "data,label":
        raise DataError(f"{path}:1: expected the header 'data,label', got {(lines or [''])[0][:40]!r}")
    values, labels = [], []
    for i, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        cols = line.split(",")
        if len(cols) != 2:
            raise DataError(f"{path}:{i}: expected 2 columns (data,label), got {len(cols)}")
        try:
            values.append(float(cols[0]))
            labels.append(int(cols[1]))
        except ValueError as exc:
            raise DataError(f"{path}:{i}: expected a number and an integer label: {exc}") from exc
    if not values:
        raise DataError(f"{path}: no rows after the header")
    x = np.asarray(values, dtype=np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: non-finite values (nan or inf) in the data column")
    return x.reshape(1, 1, -1), np.asarray(labels, dtype=np.int64).reshape(1, -1)


def read_amp(path: str | Path) -> tuple[list[str], np.ndarray, tuple[str, ...]]:
    """Read modlamp's ``AMPvsUniProt.csv`` (what ``modlamp.datasets.load_AMPvsUniProt`` reads).

    The first line is ``n_samples,n_features,name_of_0,name_of_1`` (``5200,1,UniProt,AMP``);
    every other line is ``SEQUENCE, label``.

    Returns:
        The upper-case sequences, (N,) int64 labels, and the class names by label index.

    Raises:
        DataError: unreadable file, a malformed header or row, a label outside the declared
            classes, or a row count that differs from the header's.
    """
    path = Path(path)
    lines = [line.strip() for line in _read_lines(path, "CSV")]
    header = lines[0].split(",") if lines else []
    if len(header) < 4 or not header[0].strip().isdigit():
        raise DataError(f"{path}:1: expected the header 'n_samples,n_features,class0,class1,...'")
    class_names = tuple(name.strip() for name in header[2:])
    seqs: list[str] = []
    labels: list[int] = []
    for i, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        cols = [c.strip() for c in line.split(",")]
        if len(cols) != 2 or not cols[0].isalpha() or not cols[1].isdigit():
            raise DataError(f"{path}:{i}: expected 'SEQUENCE, label' (letters, integer), got {line[:40]!r}")
        if int(cols[1]) >= len(class_names):
            raise DataError(f"{path}:{i}: label {cols[1]} is not a class index below {len(class_names)}")
        seqs.append(cols[0].upper())
        labels.append(int(cols[1]))
    if len(seqs) != int(header[0]):
        raise DataError(f"{path}: header says {header[0]} sequences, the file has {len(seqs)}")
    return seqs, np.asarray(labels, dtype=np.int64), class_names


def one_hot_protein(
    seqs: list[str], max_len: int | None = None, truncate: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One-hot encode protein sequences over :data:`AMINO_ACIDS`, zero-padded to ``max_len``.

    Non-standard letters (``X``, ``B``, ``Z``, ``U``, ``O``) become all-zero columns that the mask
    still marks as real positions.

    Args:
        seqs: upper-case one-letter sequences.
        max_len: output length L; None means the longest sequence.
        truncate: cut sequences longer than ``max_len`` (otherwise they are an error).

    Returns:
        x: (N, 20, L) float32 one-hot columns.
        mask: (N, L) bool, True at real residues.

    Raises:
        DataError: a sequence is longer than ``max_len`` and ``truncate`` is off.
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    length = int(lengths.max(initial=0)) if max_len is None else max_len
    if not truncate and (lengths > length).any():
        raise DataError(
            f"{int((lengths > length).sum())} sequences are longer than max_len={length} "
            f"(longest {int(lengths.max())}); raise max_len or pass truncate=True"
        )
    lengths = np.minimum(lengths, length)
    codes = np.full((len(seqs), length), -1, dtype=np.int64)
    for i, seq in enumerate(seqs):
        codes[i, : lengths[i]] = [_AA_INDEX.get(aa, -1) for aa in seq[:length]]
    x = np.zeros((len(seqs), len(AMINO_ACIDS), length), dtype=np.float32)
    n_idx, pos_idx = np.nonzero(codes >= 0)
    x[n_idx, codes[n_idx, pos_idx], pos_idx] = 1.0
    mask = np.arange(length)[None, :] < lengths[:, None]
    return x, mask


def read_neuralop_pt(path: str | Path, keys: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Read a neuraloperator ``.pt`` data file (a dict of tensors) without unpickling objects.

    Arrays keep their stored dtypes (Darcy ``x`` is bool, Burgers is float64).

    Args:
        path: the ``.pt`` file.
        keys: keys that must be present.

    Raises:
        DataError: the file is unreadable or unsafe to load, is not a dict of tensors, or lacks
            one of ``keys``.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"cannot load {path} as tensors (torch.load weights_only=True): {first}") from exc
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, value in data.items():
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{path}: key {key!r} holds a {type(value).__name__}; expected a tensor")
        out[str(key)] = value.detach().cpu().numpy()
    missing = [k for k in keys if k not in out]
    if missing:
        raise DataError(f"{path}: missing keys {missing}; it has {sorted(out)}")
    return out
