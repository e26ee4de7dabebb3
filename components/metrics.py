"""Task metrics, looked up by name; each returns a float where higher or lower is better as noted."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["METRICS", "HIGHER_IS_BETTER", "compute_metrics", "metrics_for"]


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Share of argmax predictions equal to the label; ``scores`` (N, K)."""
    return float((scores.argmax(axis=1) == y).mean())


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """Binary AUROC from the positive-class score (Mann-Whitney U, ties counted half)."""
    from scipy.stats import rankdata

    pos = scores[:, 1] - scores[:, 0] if scores.ndim == 2 else scores
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(pos)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def cross_entropy(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of logits (N, K)."""
    z = scores - scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "auroc": auroc,
    "loss": cross_entropy,
}
HIGHER_IS_BETTER = {"accuracy": True, "auroc": True, "loss": False}
_BY_TASK_TYPE = {"binary": ("accuracy", "auroc", "loss"), "multiclass": ("accuracy", "loss")}


def metrics_for(task_type: str) -> tuple[str, ...]:
    """Names of the metrics reported for a task type."""
    return _BY_TASK_TYPE[task_type]


def compute_metrics(task_type: str, scores: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """All metrics of ``task_type`` for logits ``scores`` (N, K) and labels ``y`` (N,)."""
    return {name: METRICS[name](scores, y) for name in metrics_for(task_type)}
