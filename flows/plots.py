"""Per-epoch curves as CSV files that ``dvc plots`` and MLflow both read."""

from __future__ import annotations

import csv
from pathlib import Path

from components.atomic import atomic_path

__all__ = ["write_curve"]


def write_curve(path: str | Path, history: list[dict[str, float]]) -> None:
    """One row per epoch: ``epoch`` then each metric (an empty history writes a header only)."""
    keys = sorted({k for record in history for k in record})
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch, record in enumerate(history):
            writer.writerow([epoch, *(record.get(k, "") for k in keys)])
