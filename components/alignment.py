"""Feature alignment (FA): the debiased Sinkhorn divergence between two point clouds.

    OT_eps(a, b) = min_P <P, C> + eps' * KL(P | a (x) b),   C_ij = ||x_i - y_j||^2
    S_eps(a, b)  = OT_eps(a, b) - (OT_eps(a, a) + OT_eps(b, b)) / 2

``S_eps`` is symmetric, zero for identical clouds, and positive otherwise (Feydy et al. 2019).
The regularisation is relative: ``eps' = eps * scale`` where ``scale`` is the mean squared
distance between the two clouds (held fixed, without gradient). Feature scales differ by orders
of magnitude between bodies and embedders; a relative ``eps`` keeps the blur, and the number of
Sinkhorn iterations it needs, the same across them. Pass ``scale=1`` for an absolute ``eps``.
It is solved with POT's log-domain Sinkhorn on the torch backend; gradients w.r.t. the points
use the envelope theorem (the plan at convergence), so memory does not grow with iterations.
"""

from __future__ import annotations

import math
import warnings

import torch

__all__ = ["entropic_ot", "entropic_ot_cost", "self_entropic_ot", "sinkhorn_divergence", "SinkhornNotConverged"]


class SinkhornNotConverged(UserWarning):
    """Sinkhorn stopped at its iteration cap before reaching its tolerance."""


# (eps, max_iter) already reported in this process. Python's own once-per-location registry does
# not hold here: the catch_warnings block below resets it on every solve, so every step repeated it.
_REPORTED: set[tuple[float, int]] = set()


def entropic_ot(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    max_iter: int = 200,
    tol: float = 1e-6,
    scale: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropic OT value between uniform clouds ``x`` (n, d) and ``y`` (m, d).

    Args:
        x: (n, d) points; dtype and device are taken from it.
        y: (m, d) points.
        eps: entropic regularisation, relative to ``scale``.
        max_iter: Sinkhorn iteration cap. Raise it (or raise ``eps``) if a
            :class:`SinkhornNotConverged` warning appears.
        tol: stopping threshold on the marginal violation.
        scale: unit of ``eps``; ``None`` uses the mean squared distance between ``x`` and ``y``.

    Returns:
        Scalar tensor, differentiable w.r.t. ``x`` and ``y``.
    """
    import ot

    cost = ot.dist(x, y)  # (n, m) squared Euclidean
    return entropic_ot_cost(cost, eps, max_iter, tol, scale)


def entropic_ot_cost(
    cost: torch.Tensor,
    eps: float,
    max_iter: int = 200,
    tol: float = 1e-6,
    scale: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropic OT value for a given (n, m) cost matrix between uniform marginals.

    The same solve as :func:`entropic_ot`, for costs that are not plain squared distances
    (OTDD's augmented cost). ``scale`` is the unit of ``eps`` (``None``: the mean cost).
    """
    import ot

    if scale is None:
        scale = cost.detach().mean().clamp_min(1e-12)
    reg = float(eps * scale)
    a = torch.full((cost.shape[0],), 1.0 / cost.shape[0], dtype=cost.dtype, device=cost.device)
    b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=cost.dtype, device=cost.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ot.solve(cost, a, b, reg=reg, reg_type="KL", max_iter=max_iter, tol=tol, grad="envelope")
    for w in caught:
        if "did not converge" in str(w.message):
            _report_not_converged(eps, max_iter)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return res.value


def self_entropic_ot(
    cost: torch.Tensor,
    eps: float,
    max_iter: int = 200,
    rtol: float = 1e-6,
    scale: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """``OT_eps(a, a)`` for a symmetric (n, n) ``cost`` and uniform ``a``: the debiasing terms.

    The symmetric problem has one potential ``f`` (``g = f``), found by the averaged fixed point
    ``f <- (f + T(f)) / 2`` with ``T(f)_i = -eps' log sum_j a_j exp((f_j - C_ij) / eps')``
    (Feydy et al. 2019), which converges in tens of iterations where plain Sinkhorn needs
    thousands on a large cloud. The value is the dual ``2 <a, f>``. It stops when the value changes
    by less than ``rtol`` (relative) between iterations: the divergence's value is what the loss
    and the bound use, so that is what the rule watches. The gradient w.r.t. ``cost`` is the plan
    ``P_ij = a_i a_j exp((f_i + f_j - C_ij) / eps')`` (envelope theorem), as for :func:`entropic_ot`.

    Args:
        cost: (n, n) symmetric cost; dtype and device are taken from it.
        eps: entropic regularisation, relative to ``scale`` (``None``: the mean cost).
        max_iter: iteration cap; a :class:`SinkhornNotConverged` warning says when it is hit.
        rtol: stopping threshold on the relative change of the value.

    Returns:
        Scalar tensor, differentiable w.r.t. ``cost``.
    """
    if scale is None:
        scale = cost.detach().mean().clamp_min(1e-12)
    reg = float(eps * scale)
    c = cost.detach()
    n = c.shape[0]
    log_a = torch.full((n,), -math.log(n), dtype=c.dtype, device=c.device)
    f = torch.zeros(n, dtype=c.dtype, device=c.device)
    value = None
    for _ in range(max_iter):
        t = -reg * torch.logsumexp(log_a[None, :] + (f[None, :] - c) / reg, dim=1)
        f = 0.5 * (f + t)
        new = 2.0 * float(f.mean())
        if value is not None and abs(new - value) <= rtol * max(abs(new), 1e-12):
            value = new
            break
        value = new
    else:
        _report_not_converged(eps, max_iter)
    f = -reg * torch.logsumexp(log_a[None, :] + (f[None, :] - c) / reg, dim=1)  # one exact half-step
    plan = torch.exp(log_a[:, None] + log_a[None, :] + (f[:, None] + f[None, :] - c) / reg)
    return 2.0 * f.mean() + (plan * (cost - c)).sum()


def _report_not_converged(eps: float, max_iter: int) -> None:
    if (float(eps), max_iter) in _REPORTED:
        return
    _REPORTED.add((float(eps), max_iter))
    warnings.warn(
        f"Sinkhorn did not converge in {max_iter} iterations (eps={eps}, relative); "
        "raise align.sinkhorn_iters or align.eps (reported once per eps in this process)",
        SinkhornNotConverged,
        stacklevel=3,
    )


def sinkhorn_divergence(
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    max_iter: int = 200,
    tol: float = 1e-6,
    ot_yy: torch.Tensor | None = None,
    scale: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Debiased Sinkhorn divergence ``S_eps(x, y)`` between uniform clouds (n, d) and (m, d).

    The three OT terms share one regularisation ``eps * scale`` (required for the debiasing to
    cancel); ``scale`` defaults to the mean squared distance between ``x`` and ``y``.

    Args:
        ot_yy: precomputed ``OT(y, y)`` at the same ``eps * scale``, when ``y`` is a fixed
            reference (the source cloud); saves a third of the work per step.
    """
    import ot

    if scale is None:
        scale = ot.dist(x.detach(), y.detach()).mean().clamp_min(1e-12)
    xy = entropic_ot(x, y, eps, max_iter, tol, scale)
    xx = self_entropic_ot(ot.dist(x, x), eps, max_iter, scale=scale)
    yy = self_entropic_ot(ot.dist(y, y), eps, max_iter, scale=scale) if ot_yy is None else ot_yy
    return xy - 0.5 * (xx + yy)
