"""The benchmark's table maths: errors, mean +- std per cell, ranks, ratios to a baseline, the
rank correlation between the bound and the test error, and the paired statistics that can tell
two methods apart (per-seed differences, a bootstrap interval, an exact sign-flip test, Holm's
correction across comparisons, collapse counts).

A row is one run: ``{"task", "method", "seed", "error"}`` plus anything else (``bound/value``,
``collapsed``). ``error`` is lower-is-better for every task (``1 - accuracy`` for classification
metrics).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

import numpy as np

__all__ = [
    "to_error",
    "cells",
    "average_ranks",
    "ratios_to",
    "geometric_mean",
    "spearman",
    "paired_differences",
    "bootstrap_interval",
    "sign_flip_test",
    "holm",
    "collapse_counts",
]

# Above this many differences the 2^n sign patterns are sampled instead of enumerated.
_EXACT_MAX_N = 20
_MONTE_CARLO_DRAWS = 100_000
# |mean| ties with the observed one up to float rounding (patterns are summed in another order).
_TIE_TOLERANCE = 1e-12


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


def paired_differences(rows: Iterable[dict], a: str, b: str, task: str) -> list[float]:
    """Per-seed differences ``error(a) - error(b)`` on ``task``, paired by seed, sorted by seed.

    Seeds present for only one of the two methods are left out: an unpaired run says nothing
    about the difference (each seed fixes the split and the initialisation for every method).

    Args:
        rows: runs, each a dict with ``task``, ``method``, ``seed`` and ``error``.
        a: the method whose error comes first (negative differences: ``a`` is better).
        b: the method it is compared with.
        task: the task whose runs are paired.

    Returns:
        One difference per seed that both methods ran, in increasing seed order.

    Raises:
        ValueError: a (task, method, seed) appears in more than one row.
    """
    errors: dict[str, dict[int, float]] = {a: {}, b: {}}
    for r in rows:
        if r["task"] != task or r["method"] not in errors:
            continue
        per_seed = errors[r["method"]]
        seed = int(r["seed"])
        if seed in per_seed:
            raise ValueError(f"two runs for task {task!r}, method {r['method']!r}, seed {seed}")
        per_seed[seed] = float(r["error"])
    shared = sorted(set(errors[a]) & set(errors[b]))
    return [errors[a][s] - errors[b][s] for s in shared]


def bootstrap_interval(
    diffs: Iterable[float], level: float = 0.95, n_boot: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of the mean paired difference.

    Resamples the ``n`` differences with replacement ``n_boot`` times (a ``(n_boot, n)`` index
    matrix from ``numpy.random.default_rng(seed)``, so the interval is reproducible) and takes the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled means.

    Args:
        diffs: paired differences, one per seed.
        level: coverage of the interval, in (0, 1).
        n_boot: number of bootstrap resamples.
        seed: seed of the resampling generator.

    Returns:
        ``(mean, low, high)``; the bounds are ``nan`` with fewer than 2 differences (one value
        has no spread to resample) and the mean is ``nan`` with none.

    Raises:
        ValueError: ``level`` is not in (0, 1) or ``n_boot`` < 1.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    d = np.asarray(list(diffs), dtype=np.float64)
    mean = float(d.mean()) if d.size else math.nan
    if d.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(n_boot, d.size))].mean(axis=1)  # (n_boot,)
    low, high = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return mean, float(low), float(high)


def sign_flip_test(diffs: Iterable[float], seed: int = 0) -> float:
    """Two-sided paired sign-flip (permutation) test of "the mean difference is 0".

    Under the null each difference is as likely to have either sign, so the observed mean is
    compared with the means of all ``2^n`` sign patterns: ``p`` is the share of patterns whose
    ``|mean|`` is at least the observed ``|mean|`` (ties within 1e-12, relative to the mean's
    scale when that exceeds 1). The observed pattern is one of them, so ``p >= 2 / 2^n`` when
    any difference is non-zero: three seeds cannot reach ``p < 0.25``. Zero differences are kept
    as they are (flipping them changes nothing).

    Exact for ``n <= 20``; above that, 100,000 random patterns from ``default_rng(seed)`` estimate
    ``p`` as ``(hits + 1) / (draws + 1)`` (counting the observed pattern, so never 0).

    Args:
        diffs: paired differences, one per seed (and task, when pooled).
        seed: seed of the Monte Carlo patterns (unused for ``n <= 20``).

    Returns:
        The two-sided p-value; 1.0 for no differences.
    """
    d = np.asarray(list(diffs), dtype=np.float64)
    n = d.size
    if n == 0:
        return 1.0
    observed = abs(float(d.sum()))
    tol = _TIE_TOLERANCE * max(1.0, observed)
    if n <= _EXACT_MAX_N:
        # Sums of every sign pattern, built one difference at a time: 2^n values (8 MB at n=20).
        sums = np.zeros(1)
        for x in d:
            sums = np.concatenate([sums + x, sums - x])
        return float(np.count_nonzero(np.abs(sums) >= observed - tol) / sums.size)
    rng = np.random.default_rng(seed)
    hits, chunk = 0, 10_000
    for start in range(0, _MONTE_CARLO_DRAWS, chunk):
        size = min(chunk, _MONTE_CARLO_DRAWS - start)
        signs = rng.choice(np.array([-1.0, 1.0]), size=(size, n))  # (size, n)
        hits += int(np.count_nonzero(np.abs(signs @ d) >= observed - tol))
    return (hits + 1) / (_MONTE_CARLO_DRAWS + 1)


def holm(pvalues: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values for a family of comparisons.

    With the ``m`` p-values sorted ascending, the ``i``-th (0-based) is multiplied by ``m - i``;
    a running maximum keeps the adjusted values in the same order as the raw ones, and they are
    capped at 1. Rejecting where the adjusted value is below ``alpha`` controls the family-wise
    error rate at ``alpha``.

    Args:
        pvalues: comparison name -> raw p-value.

    Returns:
        Comparison name -> adjusted p-value (same keys).
    """
    order = sorted(pvalues, key=lambda k: pvalues[k])
    m = len(order)
    out: dict[str, float] = {}
    running = 0.0
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * pvalues[key]))
        out[key] = running
    return {k: out[k] for k in pvalues}


def _is_collapsed(value: object) -> bool:
    if isinstance(value, float) and math.isnan(value):
        return False  # an unknown collapse flag is not a collapse
    return bool(value)


def collapse_counts(rows: Iterable[dict]) -> dict[str, dict[str, int]]:
    """Per method, how many runs collapsed to a constant prediction, out of how many.

    Args:
        rows: runs, each with ``method`` and optionally ``collapsed`` (1.0 when the run's test
            predictions were constant, as the evaluate stage reports ``test/collapsed``; a missing
            key counts as not collapsed).

    Returns:
        ``method -> {"collapsed": runs that collapsed, "runs": all runs}``, methods sorted.
    """
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"collapsed": 0, "runs": 0})
    for r in rows:
        c = counts[r["method"]]
        c["runs"] += 1
        c["collapsed"] += int(_is_collapsed(r.get("collapsed", 0.0)))
    return {m: counts[m] for m in sorted(counts)}
