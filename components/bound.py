"""The terms of RECRAFT's generalisation bound, measured on a fine-tuned model.

    target error  <=  fit  +  L * W1(source features, embedded target features)  +  distortion

Each term in consistent units (docs/pipeline.md, "The bound report", has the derivation):

- ``bound/fit``: the validation task loss.
- ``bound/w``: a Wasserstein-type distance between the pooled target features ``mean_t phi(x)_t``
  of the whole validation split and the source cloud, in feature units: the square root of the
  debiased squared-cost Sinkhorn divergence (about W2, and W1 <= W2).
- ``bound/lipschitz``: ``L``, the largest per-sample norm of the source loss's gradient w.r.t. a
  shift of all tokens (:func:`components.source.lipschitz_constants`): the constant that turns a
  distance between pooled features into a difference of loss.
- ``bound/fld``: the conditional entropy ``H(Z_s | Z')`` of the frozen source predictor's
  averaged prediction per target class (the ``ce`` form, >= 0), over the whole validation split.
- ``bound/value = fit + lipschitz * w + fld``.

``bound/fa`` is also reported: the squared-cost divergence averaged over stage-1-sized batches,
the quantity stage 1 minimises (``align/fa``), measured on the fine-tuned embedder.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from components.align_loop import AlignReference, ot_dist
from components.alignment import self_entropic_ot, sinkhorn_divergence
from components.bodies import Body, masked_mean
from components.config import AlignParams
from components.distortion import feature_label_distortion

__all__ = ["bound_terms"]


@torch.no_grad()
def bound_terms(
    embedder: nn.Module,
    source_body: Body,
    ref: AlignReference,
    x: torch.Tensor,
    groups: torch.Tensor,
    mask: torch.Tensor | None,
    cfg: AlignParams,
    fit_loss: float,
    lipschitz: float,
) -> dict[str, float]:
    """The bound's terms for a fine-tuned ``embedder`` on validation inputs ``x`` with FLD groups.

    Args:
        embedder: the fine-tuned ``phi``.
        source_body: the frozen pre-trained body of stage 0 (``p_s`` reads it, not the fine-tuned one).
        ref: stage 0's source cloud (n, d) and frozen head ``h_s``.
        x: validation inputs (N, ...) on the device of ``ref.cloud``; ``groups`` (N,) classes or
            pseudo-labels; ``mask`` (N, L) for padded sequences.
        cfg: stage 1's ``eps``, ``sinkhorn_iters`` and ``batch_size`` (for ``bound/fa``).
        fit_loss: the validation task loss; ``lipschitz``: ``L`` of the source loss (pooled).

    Returns:
        ``bound/fit``, ``bound/fa``, ``bound/w``, ``bound/fld``, ``bound/lipschitz``, ``bound/value``.
    """
    was_training = embedder.training
    embedder.eval()
    pooled, probs = [], []
    for i in range(0, len(groups), 256):
        m = None if mask is None else mask[i : i + 256]
        u = embedder(x[i : i + 256], m)
        tmask = embedder.token_mask(m)
        pooled.append(masked_mean(u, tmask).float())
        probs.append(torch.softmax(ref.head(masked_mean(source_body(u, tmask), tmask)).float(), dim=-1))
    embedder.train(was_training)
    feats, p = torch.cat(pooled), torch.cat(probs)
    cloud, scale = ref.cloud, ref.scale  # eps is relative to the cloud's spread, as in stage 1
    ot_yy = self_entropic_ot(ot_dist(cloud), cfg.eps, cfg.sinkhorn_iters, scale=scale)
    # The whole split at once: the distance between the two distributions, not a batch's.
    whole = sinkhorn_divergence(feats, cloud, cfg.eps, cfg.sinkhorn_iters, ot_yy=ot_yy, scale=scale)
    fa = 0.0
    for i in range(0, len(feats), cfg.batch_size):
        part = feats[i : i + cfg.batch_size]
        div = sinkhorn_divergence(part, cloud, cfg.eps, cfg.sinkhorn_iters, ot_yy=ot_yy, scale=scale)
        fa += div.item() * len(part) / len(feats)
    w = math.sqrt(max(whole.item(), 0.0))
    fld = feature_label_distortion(p, groups, "ce").item()
    return {
        "bound/fit": fit_loss,
        "bound/fa": fa,
        "bound/w": w,
        "bound/fld": fld,
        "bound/lipschitz": lipschitz,
        "bound/value": fit_loss + lipschitz * w + fld,
    }
