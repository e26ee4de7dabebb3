"""Stage 0: the source reference - feature cloud and source head ``h_s`` on the frozen body.

The source corpus is token-tagged NER (CoNLL format, BIO tags). A sentence's label is the entity
type that covers most of its tokens, or ``none`` when it has no entity.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from components.align_loop import AlignReference
from components.atomic import write_json
from components.bodies import Body, masked_mean
from components.checkpoints import load_checkpoint, load_tensors, save_checkpoint, save_tensors
from components.config import SourceParams
from components.distortion import lipschitz_hinge
from components.errors import DataError
from components.layout import Layout

__all__ = [
    "Sentence",
    "read_conll",
    "sentence_labels",
    "SourceBatch",
    "tokenize",
    "source_cloud",
    "train_source_head",
    "per_sample_grad_norms",
    "pooled_features",
    "balanced_accuracy",
    "lipschitz_constants",
    "source_summary",
    "save_source",
    "load_reference",
]


@dataclass(frozen=True)
class Sentence:
    tokens: tuple[str, ...]
    tags: tuple[str, ...]


def read_conll(path: str | Path) -> list[Sentence]:
    """Read ``token<TAB>tag`` lines; blank (or whitespace-only) lines separate sentences."""
    path = Path(path)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read source corpus {path}: {exc}") from exc
    for n, line in enumerate(lines, 1):
        if not line.strip():
            if tokens:
                sentences.append(Sentence(tuple(tokens), tuple(tags)))
            tokens, tags = [], []
            continue
        parts = line.split()
        if len(parts) < 2:
            raise DataError(f"{path}:{n}: expected 'token tag', got {line!r}")
        tokens.append(parts[0])
        tags.append(parts[-1])
    if tokens:
        sentences.append(Sentence(tuple(tokens), tuple(tags)))
    if not sentences:
        raise DataError(f"source corpus {path} holds no sentences")
    return sentences


def sentence_labels(sentences: list[Sentence]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Label each sentence by its majority entity type (``none`` without entities).

    Ties go to the type that appears first in the sentence. Returns (N,) int64 labels and the
    class names, ``none`` first and entity types sorted.
    """
    names: list[str] = []
    for s in sentences:
        types = [t[2:] for t in s.tags if t[:2] in ("B-", "I-")]
        if not types:
            names.append("none")
            continue
        counts = Counter(types)
        best = max(counts.values())
        names.append(next(t for t in types if counts[t] == best))
    classes = ("none", *sorted(set(names) - {"none"}))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[n] for n in names], dtype=np.int64), classes


@dataclass(frozen=True)
class SourceBatch:
    """Tokenised source sentences: ``input_ids`` and ``mask`` (N, T), ``labels`` (N,)."""

    input_ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor


def tokenize(tokenizer, sentences: list[Sentence], labels: np.ndarray, max_tokens: int) -> SourceBatch:
    """Tokenise pre-split words with the body's tokenizer, padded/truncated to ``max_tokens``."""
    enc = tokenizer(
        [list(s.tokens) for s in sentences],
        is_split_into_words=True,
        truncation=True,
        max_length=max_tokens,
        padding="max_length",
        return_tensors="pt",
    )
    return SourceBatch(enc["input_ids"], enc["attention_mask"], torch.as_tensor(labels))


@torch.no_grad()
def source_cloud(body: Body, batch: SourceBatch, chunk: int = 256) -> torch.Tensor:
    """(N, d) source feature cloud: token-mean of ``theta`` embeddings of each sentence."""
    out = [
        masked_mean(body.embed(batch.input_ids[i : i + chunk]), batch.mask[i : i + chunk])
        for i in range(0, len(batch.labels), chunk)
    ]
    return torch.cat(out)


def per_sample_grad_norms(
    body: Body, head: nn.Module, u: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy and ``||grad_u loss_i||_2`` (N,), kept in the autograd graph.

    Samples do not interact in the body (no batch statistics), so the gradient of the summed
    loss w.r.t. ``u`` holds each sample's own gradient in its row.
    """
    u = u.detach().requires_grad_(True)
    # The fused CPU attention kernels have no double backward; the math kernel does.
    with sdpa_kernel(SDPBackend.MATH):
        logits = head(masked_mean(body(u, mask), mask))
        losses = nn.functional.cross_entropy(logits, labels, reduction="none")
        (grad,) = torch.autograd.grad(losses.sum(), u, create_graph=True)
    return losses, grad.flatten(1).norm(dim=1)


def train_source_head(
    body: Body, train: SourceBatch, val: SourceBatch, n_classes: int, cfg: SourceParams, seed: int
) -> tuple[nn.Linear, list[dict[str, float]]]:
    """Train ``h_s = Linear(d, C_s)`` on mean-pooled ``g(theta(x))`` of the frozen body.

    The first ``cfg.epochs - cfg.hinge_epochs`` epochs use cross-entropy (class-balanced with
    ``cfg.balanced``) on cached pooled features (the body is frozen, so they never change). The
    last ``cfg.hinge_epochs`` epochs, of at most ``cfg.hinge_steps`` minibatches each, add the
    Lipschitz hinge ``rho * mean max(0, ||grad_u loss_i|| - tau)^2``, which needs a double
    backward through the body. ``cfg.tau`` None calibrates tau to the body: the
    ``cfg.tau_quantile`` quantile of the per-sample norms measured on the training sentences when
    the hinge starts (a fixed tau of 0.4 is never reached on MiniLM, whose norms are 4-7, and
    flattens the head).

    Returns:
        The head and one dict per epoch (``train_loss``, ``hinge``, ``max_grad_norm`` and
        ``mean_grad_norm`` of the hinge's samples, ``tau``, ``val_accuracy``, ``val_balanced_accuracy``).
    """
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(body.hidden_size, n_classes)
    nn.init.normal_(head.weight, std=0.02, generator=gen)
    nn.init.zeros_(head.bias)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=0.01)
    body.eval()
    for p in body.parameters():
        p.requires_grad_(False)
    u_train = source_cloud_tokens(body, train)
    feats = pooled_features(body, train)
    val_feats = pooled_features(body, val)
    # Class-balanced cross-entropy: "none" is ~60% of WNUT sentences, and a head that mostly
    # predicts it gives near-uniform, useless predictions on target embeddings (FLD at ln C_s).
    counts = torch.bincount(train.labels, minlength=n_classes).clamp_min(1).float()
    weight = (counts.sum() / (n_classes * counts)) if cfg.balanced else None
    history: list[dict[str, float]] = []
    tau = cfg.tau
    for epoch in range(cfg.epochs):
        use_hinge = epoch >= cfg.epochs - cfg.hinge_epochs
        if use_hinge and tau is None:  # calibrate once, on the head as the hinge finds it
            tau = float(torch.quantile(_grad_norms(body, head, train, cfg.batch_size), cfg.tau_quantile))
        perm = torch.randperm(len(train.labels), generator=gen)
        hinge = (tau, cfg.rho, cfg.hinge_steps) if use_hinge else None
        record = _source_epoch(body, head, opt, train, (u_train, feats, weight), perm, cfg.batch_size, hinge)
        with torch.no_grad():
            pred = head(val_feats).argmax(-1)
        record["val_accuracy"] = (pred == val.labels).float().mean().item()
        record["val_balanced_accuracy"] = balanced_accuracy(pred, val.labels, n_classes)
        history.append(record)
    return head, history


def _source_epoch(
    body: Body,
    head: nn.Linear,
    opt: torch.optim.Optimizer,
    train: SourceBatch,
    cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    perm: torch.Tensor,
    batch_size: int,
    hinge: tuple[float, float, int | None] | None,
) -> dict[str, float]:
    """One epoch of :func:`train_source_head` over ``perm``: cross-entropy on the cached pooled
    features, or with ``hinge`` = (tau, rho, steps cap) the weighted loss plus the hinge, through
    the body from the cached tokens. ``cached``: (tokens, pooled features, class weights)."""
    u_train, feats, weight = cached
    n = len(train.labels)
    tot_loss = tot_hinge = max_norm = sum_norm = 0.0
    for step, start in enumerate(range(0, n, batch_size)):
        if hinge is not None and hinge[2] is not None and step >= hinge[2]:
            break
        idx = perm[start : start + batch_size]
        if hinge is not None:
            losses, norms = per_sample_grad_norms(body, head, u_train[idx], train.mask[idx], train.labels[idx])
            penalty = lipschitz_hinge(norms, hinge[0], hinge[1])
            w = torch.ones_like(losses) if weight is None else weight[train.labels[idx]]
            loss = (w * losses).sum() / w.sum() + penalty
            tot_hinge += penalty.item() * len(idx)
            max_norm = max(max_norm, norms.max().item())
            sum_norm += norms.sum().item()
        else:
            loss = nn.functional.cross_entropy(head(feats[idx]), train.labels[idx], weight=weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        tot_loss += loss.item() * len(idx)
    seen = n if hinge is None or hinge[2] is None else min(n, hinge[2] * batch_size)
    return {
        "train_loss": tot_loss / seen,
        "hinge": tot_hinge / seen,
        "max_grad_norm": max_norm,
        "mean_grad_norm": sum_norm / seen if hinge is not None else 0.0,
        "tau": hinge[0] if hinge is not None else 0.0,
    }


def _grad_norms(body: Body, head: nn.Module, batch: SourceBatch, chunk: int) -> torch.Tensor:
    """(N,) per-sample ``||grad_u loss_i||`` of the whole batch, detached (calibrates tau)."""
    u_all = source_cloud_tokens(body, batch)
    out = []
    for i in range(0, len(batch.labels), chunk):
        sl = slice(i, i + chunk)
        _, norms = per_sample_grad_norms(body, head, u_all[sl], batch.mask[sl], batch.labels[sl])
        out.append(norms.detach())
    return torch.cat(out)


@torch.no_grad()
def source_cloud_tokens(body: Body, batch: SourceBatch, chunk: int = 256) -> torch.Tensor:
    """(N, T, d) ``theta`` embeddings of a tokenised batch."""
    return torch.cat([body.embed(batch.input_ids[i : i + chunk]) for i in range(0, len(batch.labels), chunk)])


@torch.no_grad()
def pooled_features(body: Body, batch: SourceBatch, chunk: int = 256) -> torch.Tensor:
    """(N, d) mean-pooled ``g(theta(x))`` of a tokenised batch (the frozen head's input)."""
    out = []
    for i in range(0, len(batch.labels), chunk):
        mask = batch.mask[i : i + chunk]
        out.append(masked_mean(body(body.embed(batch.input_ids[i : i + chunk]), mask), mask))
    return torch.cat(out)


def balanced_accuracy(pred: torch.Tensor, labels: torch.Tensor, n_classes: int) -> float:
    """Mean over present classes of per-class recall."""
    recalls = [(pred[labels == k] == k).float().mean().item() for k in range(n_classes) if (labels == k).any()]
    return float(np.mean(recalls))


@torch.no_grad()
def lipschitz_constants(body: Body, head: nn.Module, batch: SourceBatch, chunk: int = 128) -> dict[str, float]:
    """The source loss's largest per-sample gradient norms over a batch, in two geometries.

    - ``token``: ``||grad_u loss_i||`` over the whole (T, d) token tensor (what the hinge bounds).
    - ``pooled``: ``||sum_t grad_{u_t} loss_i||``, the gradient w.r.t. one shift ``delta`` added to
      every real token. Shifting all tokens by ``delta`` moves the pooled feature by ``delta``, so
      this is the Lipschitz constant in the space where FA's clouds live, the one ``bound/value``
      multiplies with a transport distance. ``pooled <= sqrt(T) * token`` (Cauchy-Schwarz).
    """
    best = {"token": 0.0, "pooled": 0.0}
    for i in range(0, len(batch.labels), chunk):
        mask = batch.mask[i : i + chunk]
        with torch.enable_grad():
            u = body.embed(batch.input_ids[i : i + chunk]).detach().requires_grad_(True)
            with sdpa_kernel(SDPBackend.MATH):
                logits = head(masked_mean(body(u, mask), mask))
                losses = nn.functional.cross_entropy(logits, batch.labels[i : i + chunk], reduction="none")
            (grad,) = torch.autograd.grad(losses.sum(), u)
        grad = grad * mask.unsqueeze(-1).to(grad.dtype)  # padded tokens are not shifted
        best["token"] = max(best["token"], grad.flatten(1).norm(dim=1).max().item())
        best["pooled"] = max(best["pooled"], grad.sum(dim=1).norm(dim=1).max().item())
    return best


def source_summary(out: dict, seconds: float) -> dict:
    """What stage 0 reports (``metrics/source.json``, ``models/source/summary.json``)."""
    final = out["history"][-1]
    return {
        "n_points": len(out["cloud"]),
        "classes": list(out["classes"]),
        "val_accuracy": final["val_accuracy"],
        "val_balanced_accuracy": final["val_balanced_accuracy"],
        "lipschitz": out["lipschitz"]["pooled"],
        "token_grad_norm": out["lipschitz"]["token"],
        "tau": final["tau"] or None,
        "seconds": seconds,
    }


def save_source(directory: Path, out: dict, summary: dict) -> None:
    """Stage 0's outputs in ``directory`` (``models/source``): what :func:`load_reference` and
    :func:`components.recipe.bound_terms` read back."""
    save_tensors(directory / "cloud.safetensors", {"cloud": out["cloud"], "labels": out["labels"].long()})
    d = out["cloud"].shape[1]
    save_checkpoint(directory / "head", out["head"], {"kind": "source_head", "n_classes": len(out["classes"]), "d": d})
    write_json(directory / "summary.json", summary)


def load_reference(layout: Layout) -> AlignReference:
    """Stage 0's outputs: the source cloud and its labels, and the source head (built here, so
    its initialisation draws from the global generator before the saved weights replace it)."""
    tensors = load_tensors(layout.source_dir / "cloud.safetensors")
    cfg = json.loads((layout.source_dir / "head" / "config.json").read_text())
    head = torch.nn.Linear(cfg["d"], cfg["n_classes"])
    load_checkpoint(layout.source_dir / "head", head, {"kind": "source_head"})
    return AlignReference(tensors["cloud"], head, tensors.get("labels"))
