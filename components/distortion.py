"""Feature-label distortion (FLD) and the Lipschitz hinge.

FLD is a plug-in estimate of the conditional entropy H(Z_s | Z') of the frozen source
predictor's label ``Z_s`` given the target label ``Z'``:

    P_k = mean_{i : y_i = k} p_s(. | phi(x_i))      (averaged source prediction of class k)
    FLD_ce = sum_k pi_k H(P_k)                        (pi_k: share of class k in the batch)
    FLD_mi = FLD_ce - H(mean_i p_s(. | phi(x_i)))    (~ -I(Z_s; Z'), up to a constant)

``ce`` asks each target class to map onto one source class; ``mi`` also asks different target
classes to map onto different source classes.
"""

from __future__ import annotations

import torch

__all__ = ["FLD_VARIANTS", "entropy", "feature_label_distortion", "lipschitz_hinge"]

FLD_VARIANTS = ("ce", "mi")


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Shannon entropy (nats) of probability vectors along ``dim``; 0 log 0 = 0."""
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim=dim)


def feature_label_distortion(probs: torch.Tensor, labels: torch.Tensor, variant: str = "ce") -> torch.Tensor:
    """FLD of a batch.

    Args:
        probs: (N, C_s) source-class probabilities ``p_s(. | phi(x))``.
        labels: (N,) integer target labels (or pseudo-labels).
        variant: ``"ce"`` or ``"mi"`` (see the module docstring).

    Returns:
        Scalar tensor in [0, ln C_s] for ``ce``; in [-ln C_s, ln C_s] for ``mi``.
    """
    if variant not in FLD_VARIANTS:
        raise ValueError(f"unknown FLD variant {variant!r}; choices: {', '.join(FLD_VARIANTS)}")
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    # (K, N) one-hot group matrix: row k averages the predictions of group k.
    groups = torch.zeros(len(classes), len(labels), dtype=probs.dtype, device=probs.device)
    groups[inverse, torch.arange(len(labels), device=probs.device)] = 1.0
    p_k = groups @ probs / counts.to(probs.dtype).unsqueeze(1)  # (K, C_s)
    prior = counts.to(probs.dtype) / len(labels)
    fld = (prior * entropy(p_k)).sum()
    if variant == "mi":
        fld = fld - entropy(probs.mean(dim=0))
    return fld


def lipschitz_hinge(grad_norms: torch.Tensor, tau: float, rho: float) -> torch.Tensor:
    """``rho * mean_i max(0, ||grad_u loss_i|| - tau)^2`` over per-sample gradient norms (N,)."""
    return rho * torch.relu(grad_norms - tau).pow(2).mean()
