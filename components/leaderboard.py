"""The benchmark's table maths: errors, mean +- std per cell, ranks, ratios to a baseline, and
the rank correlation between the bound and the test error.

A row is one run: ``{"task", "method", "seed", "error"}`` plus anything else (``bound/value``).
``error`` is lower-is-better for every task (``1 - accuracy`` for classification metrics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

__all__ = ["to_error", "cells", "average_ranks", "ratios_to", "geometric_mean", "spearman"]


def to_error(value: float, higher_is_better: bool) -> float:
    """Turn a headline metric into an error: ``1 - value`` when higher is better, else ``value``."""
    return 1.0 - value if higher_is_better else value


def cells(rows: Iterable[dict]) -> dict[tuple[str, str], dict[str, float]]:
    """``(task, method) -> {"mean", "std", "n"}`` of ``error`` over seeds (std with ddof=1; 0 for one seed)."""
    grouped: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        grouped[(r["task"], r["method"])].append(float(r["error"]))
    out = {}
    for key, errs in grouped.items():
        a = np.asarray(errs)
        out[key] = {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}
    return out


def _rank(values: list[float]) -> list[float]:
    """1-based ranks, lowest value first; ties share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def average_ranks(table: dict[tuple[str, str], dict[str, float]]) -> dict[str, float]:
    """Each method's rank by mean error within each task (1 = best), averaged over tasks.

    Only tasks where every method has a cell are ranked, so methods are compared on equal ground.
    """
    tasks = sorted({t for t, _ in table})
    methods = sorted({m for _, m in table})
    sums = dict.fromkeys(methods, 0.0)
    counted = 0
    for task in tasks:
        if not all((task, m) in table for m in methods):
            continue
        ranks = _rank([table[(task, m)]["mean"] for m in methods])
        for m, r in zip(methods, ranks, strict=True):
            sums[m] += r
        counted += 1
    return {m: (s / counted if counted else math.nan) for m, s in sums.items()}


def ratios_to(table: dict[tuple[str, str], dict[str, float]], baseline: str) -> dict[tuple[str, str], float]:
    """``(task, method) -> mean error / baseline's mean error`` on the same task (< 1: better).

    A zero baseline error gives ``nan`` (no ratio is defined), never a division by zero.
    """
    out = {}
    for (task, method), cell in table.items():
        base = table.get((task, baseline))
        if base is None:
            continue
        out[(task, method)] = cell["mean"] / base["mean"] if base["mean"] > 0 else math.nan
    return out


def geometric_mean(values: Iterable[float]) -> float:
    """Geometric mean of the finite, positive values (``nan`` if there are none)."""
    kept = [v for v in values if math.isfinite(v) and v > 0]
    return float(math.exp(sum(math.log(v) for v in kept) / len(kept))) if kept else math.nan


def spearman(x: Iterable[float], y: Iterable[float]) -> tuple[float, float]:
    """Spearman's rank correlation of paired values and its two-sided p-value (``nan`` if < 3 pairs)."""
    pairs = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pairs) < 3:
        return math.nan, math.nan
    from scipy.stats import spearmanr

    res = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return float(res.statistic), float(res.pvalue)
