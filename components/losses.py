"""Task losses of stage 2, one per task type (torch, differentiable)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["task_loss", "relative_l2", "class_weights"]


def relative_l2(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over samples of ``||pred_i - y_i||_2 / ||y_i||_2`` (the PDE field loss, scale-free)."""
    err = (pred - y).flatten(1).norm(dim=1)
    return (err / y.flatten(1).norm(dim=1).clamp_min(1e-8)).mean()


def class_weights(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """``n / (K * count_k)`` per class (all 1 when classes are balanced; absent classes get 0)."""
    counts = torch.bincount(y, minlength=n_classes).float()
    return torch.where(counts > 0, len(y) / (n_classes * counts.clamp_min(1)), torch.zeros_like(counts))


def task_loss(
    task_type: str,
    out: torch.Tensor,
    y: torch.Tensor,
    target_std: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """The training loss of ``task_type`` for model outputs ``out`` and targets ``y``.

    - binary / multiclass: cross-entropy of logits (B, K) against labels (B,), optionally with
      per-class ``weights`` (:func:`class_weights`);
    - multilabel: binary cross-entropy of logits (B, K) against a 0/1 matrix;
    - regression: mean squared error in units of the training targets' std (``target_std``);
    - field: relative L2 (:func:`relative_l2`).
    """
    out = out.float()
    if task_type in ("binary", "multiclass"):
        return nn.functional.cross_entropy(out, y, weight=weights)
    if task_type == "multilabel":
        return nn.functional.binary_cross_entropy_with_logits(out, y.float())
    if task_type == "regression":
        std = 1.0 if target_std is None else target_std.view(1, -1)
        return (((out - y).view(len(y), -1) / std) ** 2).mean()
    if task_type == "field":
        return relative_l2(out, y)
    raise ValueError(f"unknown task type {task_type!r}")
