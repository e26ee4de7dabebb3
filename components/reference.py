"""Linear references for fields and regression: the ridge map and the mean prediction.

A scientific-ML user's first check of a learned field model is whether it beats a linear map
fitted on the same split. :func:`fit_ridge` fits that map in closed form (inputs and targets
flattened and centred; the penalty chosen on validation data from a log grid), and
:func:`references` scores it, and the training mean, with the task's own metrics.

The fitted map is stored in factored form, ``y = y_mean + ((x - x_mean) @ basis) @ coef``, of rank
at most :data:`MAX_RANK`: a 2D field of 64 x 64 cells would otherwise need a 4096 x 4096 matrix.
Up to that rank the solution is the exact ridge solution; beyond it, the ridge solution on the
top singular directions of the training inputs (reduced-rank ridge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.metrics import HIGHER_IS_BETTER, compute_metrics

__all__ = ["MAX_RANK", "LinearMap", "fit_ridge", "references", "REFERENCE_TASK_TYPES"]

#: Rank cap of the stored map (memory: (D_in + D_out) * rank floats).
MAX_RANK = 512
#: Ridge penalties tried, as multiples of the mean squared singular value of the centred inputs.
ALPHAS = tuple(10.0**k for k in range(-10, 5))
#: Task types with a linear reference (real-valued targets).
REFERENCE_TASK_TYPES = ("regression", "field")


@dataclass(frozen=True)
class LinearMap:
    """``y = y_mean + ((x - x_mean) @ basis) @ coef`` on flattened inputs and targets (float64)."""

    x_mean: np.ndarray  # (D_in,)
    basis: np.ndarray  # (D_in, r)
    coef: np.ndarray  # (r, D_out)
    y_mean: np.ndarray  # (D_out,)
    alpha: float  # the penalty chosen, in absolute units

    def predict(self, x: np.ndarray, target_shape: tuple[int, ...]) -> np.ndarray:
        flat = x.reshape(len(x), -1).astype(np.float64) - self.x_mean
        return ((flat @ self.basis) @ self.coef + self.y_mean).reshape(len(x), *target_shape).astype(np.float32)


def _masked(x: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """Inputs with padded steps zeroed, as the embedder sees them."""
    return x if mask is None else x * mask[:, None].astype(x.dtype)


def _top_svd(a: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The thin SVD of ``a``, or, when both of its sides exceed ``2 k``, its top ``k`` singular
    triplets by a randomised range finder (Halko et al. 2011: ``k + 10`` probes, 4 power
    iterations, fixed seed), so a large 2D field costs O(N D k) instead of O(N D min(N, D))."""
    n, d = a.shape
    if min(n, d) <= 2 * k:
        return np.linalg.svd(a, full_matrices=False)
    rng = np.random.default_rng(0)
    q = np.linalg.qr(a @ rng.standard_normal((d, k + 10)))[0]
    for _ in range(4):  # power iterations sharpen the spectrum's top end
        q = np.linalg.qr(a @ np.linalg.qr(a.T @ q)[0])[0]
    ub, s, vt = np.linalg.svd(q.T @ a, full_matrices=False)
    return (q @ ub)[:, :k], s[:k], vt[:k]


def fit_ridge(
    x: np.ndarray,
    y: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    task_type: str,
    metric: str,
    mask: np.ndarray | None = None,
    mask_val: np.ndarray | None = None,
) -> LinearMap:
    """The ridge map from ``x`` to ``y`` whose penalty scores best on (``x_val``, ``y_val``).

    One thin SVD of the centred training inputs gives the solution for every penalty in
    :data:`ALPHAS`; each is scored with ``metric`` on validation data (the test split is never
    read here). Deterministic: the same inputs give the same map.
    """
    target_shape = tuple(y.shape[1:])
    xf = _masked(x, mask).reshape(len(x), -1).astype(np.float64)
    yf = y.reshape(len(y), -1).astype(np.float64)
    x_mean, y_mean = xf.mean(0), yf.mean(0)
    u, s, vt = _top_svd(xf - x_mean, MAX_RANK)
    rank = min(MAX_RANK, int((s > s[0] * 1e-12).sum()) if len(s) and s[0] > 0 else 0)
    u, s, vt = u[:, :rank], s[:rank], vt[:rank]
    uty = u.T @ (yf - y_mean)  # (r, D_out)
    scale = float((s**2).mean()) if rank else 1.0
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    best, best_score = None, -np.inf
    for a in ALPHAS:
        alpha = a * scale
        candidate = LinearMap(x_mean, vt.T, (s / (s**2 + alpha))[:, None] * uty, y_mean, alpha)
        pred = candidate.predict(_masked(x_val, mask_val), target_shape)
        score = sign * compute_metrics(task_type, pred, y_val)[metric]
        if np.isfinite(score) and score > best_score:
            best, best_score = candidate, score
    if best is None:  # no finite validation score (e.g. all-zero targets): the mean prediction
        best = LinearMap(x_mean, np.zeros((xf.shape[1], 0)), np.zeros((0, yf.shape[1])), y_mean, float("inf"))
    return best


def references(
    task_type: str,
    metric: str,
    train,
    val,
    test,
    target_std: np.ndarray | None = None,
    ridge: LinearMap | None = None,
) -> dict[str, float]:
    """Test scores of the linear references on the splits a run used.

    ``reference/mean/<m>`` predicts the training targets' mean for every case;
    ``reference/ridge/<m>`` is :func:`fit_ridge` (penalty on validation), or ``ridge`` if given.
    Every metric of the task type is reported. Empty for classification tasks.
    """
    if task_type not in REFERENCE_TASK_TYPES:
        return {}
    if ridge is None:
        ridge = fit_ridge(train.x, train.y, val.x, val.y, task_type, metric, train.mask, val.mask)
    mean = np.broadcast_to(train.y.astype(np.float64).mean(0), test.y.shape).astype(np.float32)
    out: dict[str, float] = {}
    for name, pred in (("mean", mean), ("ridge", ridge.predict(_masked(test.x, test.mask), test.y.shape[1:]))):
        for k, v in compute_metrics(task_type, pred, test.y, target_std).items():
            out[f"reference/{name}/{k}"] = v
    return out
