"""Curves (per epoch or per optimiser step) as CSV files that ``dvc plots`` and MLflow both read."""

from __future__ import annotations

import csv
from pathlib import Path

from components.atomic import atomic_path

__all__ = ["write_curve"]


def write_curve(path: str | Path, history: list[dict[str, float]], index: str = "epoch") -> None:
    """One row per record: ``index`` first (the record's own value, or its position when it has
    none, as epochs), then every other metric (an empty history writes a header only)."""
    keys = sorted({k for record in history for k in record} - {index})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([index, *keys])
        for position, record in enumerate(history):
            writer.writerow([int(record.get(index, position)), *(record.get(k, "") for k in keys)])
