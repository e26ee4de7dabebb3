"""ORCA's stage-1 objective: the optimal transport dataset distance (OTDD), label-aware FA.

A labelled point is ``z = (x, c)``. OTDD prices moving ``z = (x, c)`` to ``z' = (x', c')`` as

    C(z, z') = ||x - x'||^2 + W_2^2(N_c, N_c')

where ``N_c`` is the Gaussian fitted to the points of class ``c`` (mean ``m``, covariance ``S``)
and ``W_2`` between Gaussians has the closed (Bures-Wasserstein) form

    W_2^2 = ||m1 - m2||^2 + tr S1 + tr S2 - 2 tr (S1^1/2 S2 S1^1/2)^1/2.

Stage 1 of ``orca`` minimises, over ``phi``, the debiased entropic OT on that cost between the
labelled source cloud and each target class ``k`` of the batch, weighted by the class prior:

    OTDD = sum_k pi_k [ OT(src, tgt_k) - (OT(src, src) + OT(tgt_k, tgt_k)) / 2 ].

The target side's ``tr (A S2 A)^1/2`` (``A = S1^1/2``, fixed) equals the nuclear norm of
``Xc A / sqrt(n)`` (``Xc``: the centred target points), computed from singular values, whose
gradient stays finite where covariances are rank-deficient (a class has fewer points than ``d``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.alignment import entropic_ot_cost, self_entropic_ot

__all__ = ["LabelledCloud", "bures_wasserstein_sq", "label_distances", "otdd", "psd_sqrt"]


def psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of PSD matrices (..., d, d), negative eigenvalues clamped to 0."""
    vals, vecs = torch.linalg.eigh(s)
    return (vecs * vals.clamp_min(0.0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)


def bures_wasserstein_sq(m1: torch.Tensor, s1: torch.Tensor, m2: torch.Tensor, s2: torch.Tensor) -> torch.Tensor:
    """Squared 2-Wasserstein distance between ``N(m1, s1)`` and ``N(m2, s2)`` (means (d,), covariances (d, d))."""
    a = psd_sqrt(s1)
    cross = torch.linalg.eigvalsh(a @ s2 @ a).clamp_min(0.0).sqrt().sum()
    bures = torch.trace(s1) + torch.trace(s2) - 2.0 * cross
    return (m1 - m2).pow(2).sum() + bures.clamp_min(0.0)


def _class_gaussians(points: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class means (C, d) and biased covariances (C, d, d); an empty class has zeros."""
    d = points.shape[1]
    means = torch.zeros(n_classes, d, dtype=points.dtype, device=points.device)
    covs = torch.zeros(n_classes, d, d, dtype=points.dtype, device=points.device)
    for c in range(n_classes):
        x = points[labels == c]
        if len(x):
            means[c] = x.mean(0)
            xc = x - means[c]
            covs[c] = xc.T @ xc / len(x)
    return means, covs


@dataclass(frozen=True)
class LabelledCloud:
    """The fixed, labelled source side of OTDD, with everything that does not depend on ``phi``.

    Attributes:
        points: (n, d) source features.
        labels: (n,) integer source classes.
        means: (C, d) class means; ``cov_sqrt``: (C, d, d) square roots of class covariances;
        traces: (C,) covariance traces; ``label_cost``: (C, C) squared W_2 between source classes.
    """

    points: torch.Tensor
    labels: torch.Tensor
    means: torch.Tensor
    cov_sqrt: torch.Tensor
    traces: torch.Tensor
    label_cost: torch.Tensor

    @classmethod
    def build(cls, points: torch.Tensor, labels: torch.Tensor) -> LabelledCloud:
        points = points.detach()
        labels = labels.to(points.device).long()
        n_classes = int(labels.max()) + 1
        means, covs = _class_gaussians(points, labels, n_classes)
        label_cost = torch.stack(
            [
                torch.stack([bures_wasserstein_sq(means[i], covs[i], means[j], covs[j]) for j in range(n_classes)])
                for i in range(n_classes)
            ]
        )
        traces = torch.diagonal(covs, dim1=-2, dim2=-1).sum(-1)
        return cls(points, labels, means, psd_sqrt(covs), traces, label_cost)

    def self_cost(self) -> torch.Tensor:
        """(n, n) augmented cost of the source against itself."""
        feats = torch.cdist(self.points, self.points).pow(2)
        return feats + self.label_cost[self.labels][:, self.labels]


def label_distances(source: LabelledCloud, x: torch.Tensor) -> torch.Tensor:
    """(C,) squared W_2 between each source class Gaussian and the Gaussian of target points ``x`` (n, d).

    Differentiable w.r.t. ``x``: ``tr (A S A)^1/2 = ||Xc A||_* / sqrt(n)`` through singular values.
    """
    n = x.shape[0]
    mean = x.mean(0)
    xc = (x - mean) / n**0.5  # (n, d): S = xc^T xc
    cross = torch.linalg.svdvals(xc.unsqueeze(0) @ source.cov_sqrt).sum(-1)  # (C,)
    bures = source.traces + xc.pow(2).sum() - 2.0 * cross
    return (source.means - mean).pow(2).sum(-1) + bures.clamp_min(0.0)


def otdd(
    source: LabelledCloud,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    max_iter: int = 200,
    ot_ss: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Debiased entropic OTDD between the source cloud and each target class of ``x`` (B, d).

    Args:
        source: the labelled source cloud.
        x: (B, d) embedded target batch; ``labels`` (B,) its classes (or pseudo-labels).
        eps: entropic regularisation relative to ``scale`` (default: the mean source self-cost).
        ot_ss: precomputed ``OT(src, src)`` on ``source.self_cost()`` at the same ``eps * scale``.

    Returns:
        Scalar tensor, differentiable w.r.t. ``x``.
    """
    if scale is None or ot_ss is None:
        self_cost = source.self_cost()
        scale = float(self_cost.mean()) if scale is None else scale
        ot_ss = self_entropic_ot(self_cost, eps, max_iter, scale=scale) if ot_ss is None else ot_ss
    x = x.to(source.points.dtype)
    feats = torch.cdist(source.points, x).pow(2)  # (n, B)
    total = torch.zeros((), dtype=x.dtype, device=x.device)
    classes, counts = torch.unique(labels, return_counts=True)
    for k, count in zip(classes.tolist(), counts.tolist(), strict=True):
        rows = labels == k
        u = x[rows]
        cost_xy = feats[:, rows] + label_distances(source, u)[source.labels].unsqueeze(1)
        cost_yy = torch.cdist(u, u).pow(2)  # same class: the label term is 0
        ot_xy = entropic_ot_cost(cost_xy, eps, max_iter, scale=scale)
        ot_yy = self_entropic_ot(cost_yy, eps, max_iter, scale=scale)
        total = total + (count / len(labels)) * (ot_xy - 0.5 * (ot_ss + ot_yy))
    return total
