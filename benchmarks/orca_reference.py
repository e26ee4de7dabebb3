"""A reference implementation of the OTDD configuration ORCA released, for cost comparisons.

Written from the method's description (not from ORCA's code). A labelled point is ``z = (x, c)``;
moving ``z`` to ``z' = (x', c')`` costs

    C(z, z') = ||x - x'||^2 + W(c, c')

where the label distance ``W(c, c')`` is itself an entropic OT problem between the class-
conditional point clouds (squared Euclidean cost), debiased like a Sinkhorn divergence:

    W(c, c') = OT(X_c, X_c') - (OT(X_c, X_c) + OT(X_c', X_c')) / 2.

The dataset distance is the debiased outer problem on the augmented cost between the labelled
source cloud ``s`` and the labelled target batch ``t``:

    OTDD(s, t) = OT_C(s, t) - (OT_C(s, s) + OT_C(t, t)) / 2,

whose label costs are ``C x K`` inner problems for ``(s, t)``, ``K x K`` for ``(t, t)`` and
``C x C`` for ``(s, s)``. Every problem is POT's log-domain Sinkhorn (``ot.solve``) on the torch
backend with envelope gradients, so gradients reach the target points through the outer *and*
the inner problems. ``eps`` is relative, as in :mod:`components.alignment`: the inner problems
use ``eps * scale_in`` (mean squared distance within the source cloud), the outer ones
``eps * scale_out`` (mean augmented self-cost of the source).

ORCA builds a new dataset distance for every target batch, so the source self-terms (``C x C``
inner problems and the ``n x n`` outer one) are solved again at every step
(``recompute_source=True``); they do not depend on the target, so :class:`ReferenceSource`
also keeps them, solved once, for a best-case reference.
"""

from __future__ import annotations

from dataclasses import dataclass

import ot
import torch

__all__ = ["ReferenceSource", "reference_otdd"]


def _ot(cost: torch.Tensor, reg: float, max_iter: int, tol: float) -> torch.Tensor:
    """Entropic OT value between uniform marginals for an (n, m) cost; envelope gradients."""
    a = torch.full((cost.shape[0],), 1.0 / cost.shape[0], dtype=cost.dtype, device=cost.device)
    b = torch.full((cost.shape[1],), 1.0 / cost.shape[1], dtype=cost.dtype, device=cost.device)
    return ot.solve(cost, a, b, reg=reg, reg_type="KL", max_iter=max_iter, tol=tol, grad="envelope").value


def _groups(points: torch.Tensor, labels: torch.Tensor) -> tuple[list[int], list[torch.Tensor]]:
    """The classes present and their point clouds, in class order."""
    classes = torch.unique(labels).tolist()
    return classes, [points[labels == c] for c in classes]


def _self_ot(groups: list[torch.Tensor], reg: float, max_iter: int, tol: float) -> list[torch.Tensor]:
    """``OT(X_c, X_c)`` for each class cloud: the debiasing terms of the inner problems."""
    return [_ot(ot.dist(g, g), reg, max_iter, tol) for g in groups]


def _label_cost(
    left: list[torch.Tensor],
    right: list[torch.Tensor],
    left_self: list[torch.Tensor],
    right_self: list[torch.Tensor],
    reg: float,
    max_iter: int,
    tol: float,
    symmetric: bool = False,
) -> torch.Tensor:
    """(len(left), len(right)) debiased inner OT between class clouds; ``symmetric``: left is right."""
    rows = []
    for i, (g, g_self) in enumerate(zip(left, left_self, strict=True)):
        row = []
        for j, (h, h_self) in enumerate(zip(right, right_self, strict=True)):
            if symmetric and j < i:
                row.append(rows[j][i])
            elif symmetric and j == i:
                row.append(torch.zeros((), dtype=g.dtype, device=g.device))
            else:
                row.append(_ot(ot.dist(g, h), reg, max_iter, tol) - 0.5 * (g_self + h_self))
        rows.append(row)
    return torch.stack([torch.stack(r) for r in rows]).clamp_min(0.0)


@dataclass(frozen=True)
class ReferenceSource:
    """The labelled source cloud with its target-independent terms solved once.

    Attributes:
        points: (n, d); ``labels``: (n,) source classes, re-indexed 0..C-1 in class order.
        groups: the C class clouds; ``group_self``: their ``OT(X_c, X_c)``.
        label_cost: (C, C) debiased inner OT between source classes.
        ot_ss: the outer ``OT_C(s, s)``; ``reg_in`` / ``reg_out``: absolute regularisations.
    """

    points: torch.Tensor
    labels: torch.Tensor
    groups: list[torch.Tensor]
    group_self: list[torch.Tensor]
    label_cost: torch.Tensor
    ot_ss: torch.Tensor
    reg_in: float
    reg_out: float
    max_iter: int
    tol: float

    @classmethod
    def build(
        cls, points: torch.Tensor, labels: torch.Tensor, eps: float, max_iter: int = 200, tol: float = 1e-6
    ) -> ReferenceSource:
        points = points.detach()
        classes, groups = _groups(points, labels)
        index = torch.searchsorted(torch.tensor(classes, device=labels.device), labels)
        reg_in = eps * float(ot.dist(points, points).mean())
        group_self, label_cost, self_cost = cls._source_terms(groups, points, index, reg_in, max_iter, tol)
        reg_out = eps * float(self_cost.mean())
        ot_ss = _ot(self_cost, reg_out, max_iter, tol)
        return cls(points, index, groups, group_self, label_cost, ot_ss, reg_in, reg_out, max_iter, tol)

    @staticmethod
    def _source_terms(
        groups: list[torch.Tensor], points: torch.Tensor, index: torch.Tensor, reg_in: float, max_iter: int, tol: float
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Class self-terms, the (C, C) label cost and the (n, n) augmented self-cost."""
        group_self = _self_ot(groups, reg_in, max_iter, tol)
        label_cost = _label_cost(groups, groups, group_self, group_self, reg_in, max_iter, tol, symmetric=True)
        return group_self, label_cost, ot.dist(points, points) + label_cost[index][:, index]

    def solve_self(self) -> torch.Tensor:
        """``OT_C(s, s)`` from scratch, inner problems included: what ORCA pays every step."""
        _, _, self_cost = self._source_terms(
            self.groups, self.points, self.labels, self.reg_in, self.max_iter, self.tol
        )
        return _ot(self_cost, self.reg_out, self.max_iter, self.tol)


def reference_otdd(
    source: ReferenceSource, x: torch.Tensor, labels: torch.Tensor, recompute_source: bool = False
) -> torch.Tensor:
    """Debiased OTDD with inner-OT label distances between ``source`` and the batch ``x`` (B, d).

    Args:
        source: the labelled source cloud (its iteration cap and tolerance apply to every solve).
        x: (B, d) embedded target batch; ``labels`` (B,) its classes or pseudo-labels.
        recompute_source: solve the source self-terms again (ORCA's per-batch cost) instead of
            reusing the ones in ``source``; the value is the same.

    Returns:
        Scalar tensor, differentiable w.r.t. ``x`` through the outer and the inner problems.
    """
    it, tol, reg_in = source.max_iter, source.tol, source.reg_in
    x = x.to(source.points.dtype)
    _, tgt_groups = _groups(x, labels)
    _, t_index = torch.unique(labels, return_inverse=True)
    tgt_self = _self_ot(tgt_groups, reg_in, it, tol)
    w_st = _label_cost(source.groups, tgt_groups, source.group_self, tgt_self, reg_in, it, tol)  # (C, K)
    w_tt = _label_cost(tgt_groups, tgt_groups, tgt_self, tgt_self, reg_in, it, tol, symmetric=True)  # (K, K)
    cost_st = ot.dist(source.points, x) + w_st[source.labels][:, t_index]
    cost_tt = ot.dist(x, x) + w_tt[t_index][:, t_index]
    ot_ss = source.solve_self() if recompute_source else source.ot_ss
    ot_st = _ot(cost_st, source.reg_out, it, tol)
    ot_tt = _ot(cost_tt, source.reg_out, it, tol)
    return ot_st - 0.5 * (ot_ss + ot_tt)
