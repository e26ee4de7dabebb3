"""Task metrics, looked up by name; :data:`HIGHER_IS_BETTER` says which way each one points.

Every task type reports a ``loss`` (its training loss on the split), which the bound uses as
``bound/fit``. Scores are model outputs: logits for classification, predictions otherwise.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["METRICS", "HIGHER_IS_BETTER", "compute_metrics", "metrics_for", "confusion_matrix", "is_collapsed"]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def accuracy(scores: np.ndarray, y: np.ndarray) -> float:
    """Share of argmax predictions equal to the label; ``scores`` (N, K)."""
    return float((scores.argmax(axis=1) == y).mean())


def _auroc_1d(score: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc(scores: np.ndarray, y: np.ndarray) -> float:
    """AUROC (Mann-Whitney U, ties counted half): binary from the positive-class score, or, for
    a multilabel 0/1 matrix ``y``, the mean over labels that have both values."""
    if y.ndim == 2:
        per = [_auroc_1d(scores[:, k], y[:, k]) for k in range(y.shape[1])]
        per = [a for a in per if not np.isnan(a)]
        return float(np.mean(per)) if per else float("nan")
    pos = scores[:, 1] - scores[:, 0] if scores.ndim == 2 else scores
    return _auroc_1d(pos, y)


def f1(scores: np.ndarray, y: np.ndarray) -> float:
    """F1 of the positive class (binary: argmax of logits) or micro-F1 (multilabel: logit > 0)."""
    if y.ndim == 2:
        pred, truth = scores > 0, y == 1
    else:
        pred, truth = scores.argmax(axis=1) == 1, y == 1
    tp = float((pred & truth).sum())
    denom = float(pred.sum() + truth.sum())
    return 2 * tp / denom if denom else 0.0


def cross_entropy(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of logits (N, K) against labels (N,)."""
    z = scores - scores.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


def binary_cross_entropy(scores: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of logits against a 0/1 matrix (numerically stable form)."""
    return float((np.maximum(scores, 0) - scores * y + np.log1p(np.exp(-np.abs(scores)))).mean())


def rmse(pred: np.ndarray, y: np.ndarray) -> float:
    """Root mean squared error over all entries."""
    return float(np.sqrt(((pred.astype(np.float64) - y) ** 2).mean()))


def mae(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute error over all entries."""
    return float(np.abs(pred.astype(np.float64) - y).mean())


def r2(pred: np.ndarray, y: np.ndarray) -> float:
    """Coefficient of determination, averaged over target columns."""
    p, t = pred.reshape(len(y), -1).astype(np.float64), y.reshape(len(y), -1).astype(np.float64)
    ss_res = ((p - t) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0)
    return float(np.mean(1 - ss_res / np.maximum(ss_tot, 1e-12)))


def rel_l2(pred: np.ndarray, y: np.ndarray) -> float:
    """Mean over samples of ``||pred_i - y_i|| / ||y_i||`` (neuraloperator's relative L2)."""
    err = np.linalg.norm((pred.astype(np.float64) - y).reshape(len(y), -1), axis=1)
    return float((err / np.maximum(np.linalg.norm(y.reshape(len(y), -1), axis=1), 1e-12)).mean())


def nrmse(pred: np.ndarray, y: np.ndarray) -> float:
    """PDEBench's nRMSE: per sample and channel, RMSE / RMS of the truth, averaged.

    With one output channel it equals :func:`rel_l2`.
    """
    p = pred.astype(np.float64).reshape(len(y), y.shape[1], -1)
    t = y.astype(np.float64).reshape(len(y), y.shape[1], -1)
    err = np.sqrt(((p - t) ** 2).mean(-1))
    return float((err / np.maximum(np.sqrt((t**2).mean(-1)), 1e-12)).mean())


def is_collapsed(task_type: str, scores: np.ndarray) -> bool:
    """Whether a model gives (almost) the same prediction for every input.

    Classification: one argmax class for all samples (multi-label: one 0/1 pattern). Regression
    and fields: the predictions' spread across samples is below 1e-6 of their magnitude.
    """
    if task_type in ("binary", "multiclass"):
        return len(np.unique(scores.argmax(axis=1))) == 1
    if task_type == "multilabel":
        return len(np.unique(scores > 0, axis=0)) == 1
    flat = scores.reshape(len(scores), -1)
    return bool(flat.std(axis=0).max() <= 1e-6 * max(float(np.abs(flat).mean()), 1e-12))


def confusion_matrix(scores: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    out = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(out, (y, scores.argmax(axis=1)), 1)
    return out


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "auroc": auroc,
    "f1": f1,
    "rmse": rmse,
    "mae": mae,
    "r2": r2,
    "rel_l2": rel_l2,
    "nrmse": nrmse,
}
HIGHER_IS_BETTER = {
    "accuracy": True,
    "auroc": True,
    "f1": True,
    "r2": True,
    "rmse": False,
    "mae": False,
    "rel_l2": False,
    "nrmse": False,
    "loss": False,
}
_BY_TASK_TYPE = {
    "binary": ("accuracy", "auroc", "f1"),
    "multiclass": ("accuracy",),
    "multilabel": ("f1", "auroc"),
    "regression": ("rmse", "mae", "r2"),
    "field": ("nrmse", "rel_l2", "rmse"),
}


def _loss(task_type: str, scores: np.ndarray, y: np.ndarray, target_std: np.ndarray | None) -> float:
    """The task loss of :func:`components.losses.task_loss`, in numpy."""
    if task_type in ("binary", "multiclass"):
        return cross_entropy(scores, y)
    if task_type == "multilabel":
        return binary_cross_entropy(scores, y)
    if task_type == "regression":
        std = 1.0 if target_std is None else np.asarray(target_std).reshape(1, -1)
        return float((((scores - y).reshape(len(y), -1) / std) ** 2).mean())
    return rel_l2(scores, y)


def metrics_for(task_type: str) -> tuple[str, ...]:
    """Names of the metrics reported for a task type (``loss`` included)."""
    return _BY_TASK_TYPE[task_type] + ("loss",)


def compute_metrics(
    task_type: str, scores: np.ndarray, y: np.ndarray, target_std: np.ndarray | None = None
) -> dict[str, float]:
    """All metrics of ``task_type`` for model outputs ``scores`` and targets ``y``."""
    out = {name: METRICS[name](scores, y) for name in _BY_TASK_TYPE[task_type]}
    out["loss"] = _loss(task_type, scores, y, target_std)
    return out
