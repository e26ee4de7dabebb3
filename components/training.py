"""Training loops: stage 1 (align ``phi``) and stage 2 (fit ``phi + g + h_t``).

Loops report each epoch through an ``on_epoch(epoch, metrics)`` callback, so tracking stays in
``flows/``. Device and seed are explicit arguments.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch
from torch import nn

from components.alignment import self_entropic_ot, sinkhorn_divergence
from components.bodies import Body, masked_mean
from components.checkpoints import TrainingCheckpoint, load_optimizer_state, optimizer_state
from components.config import AlignParams, FitParams
from components.data import Split
from components.distortion import feature_label_distortion
from components.distributed import all_sum, current_world, shard, shard_scale
from components.faults import fault_point
from components.losses import class_weights, task_loss
from components.metrics import HIGHER_IS_BETTER, compute_metrics
from components.model import CrossModalModel
from components.otdd import LabelledCloud, otdd

__all__ = [
    "OBJECTIVES",
    "AlignReference",
    "align_embedder",
    "align_steps",
    "alignment_terms",
    "ot_dist",
    "fit_model",
    "fit_steps",
    "predict_scores",
]

OnEpoch = Callable[[int, dict[str, float]], None]


OnStep = Callable[[int], None]


def _no_op(epoch: int, metrics: dict[str, float]) -> None:
    del epoch, metrics


def _no_step(step: int) -> None:
    del step


@dataclass(frozen=True)
class AlignReference:
    """What stage 0 hands to stage 1: the source cloud (n, d), the frozen source head and, for
    ORCA's OTDD, the cloud's source labels (n,)."""

    cloud: torch.Tensor
    head: nn.Module
    labels: torch.Tensor | None = None

    @cached_property
    def scale(self) -> float:
        """Mean squared pairwise distance within the cloud: the unit of FA's ``eps``."""
        import ot

        return float(ot.dist(self.cloud, self.cloud).mean())

    @cached_property
    def labelled(self) -> LabelledCloud:
        """The cloud with its class Gaussians, for OTDD (needs ``labels``)."""
        if self.labels is None:
            raise ValueError("OTDD needs the source labels; this reference has none (re-run the source stage)")
        return LabelledCloud.build(self.cloud, self.labels)

    @cached_property
    def otdd_scale(self) -> float:
        """Mean augmented self-cost of the labelled cloud: the unit of OTDD's ``eps``."""
        return float(self.labelled.self_cost().mean())


OBJECTIVES = ("fa", "otdd", "recraft")


def ot_dist(x: torch.Tensor) -> torch.Tensor:
    """(n, n) squared Euclidean distances within a cloud (n, d)."""
    import ot

    return ot.dist(x, x)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay in float32, bit-reproducible)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def alignment_terms(
    embedder: nn.Module,
    body: Body,
    ref: AlignReference,
    x: torch.Tensor,
    labels: torch.Tensor,
    cfg: AlignParams,
    ot_yy: torch.Tensor | None = None,
    need: tuple[str, ...] = ("fa", "fld"),
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """FA, FLD and/or OTDD of one target batch ``x`` with groups ``labels`` (B,) (``need`` says which).

    ``ot_yy`` is the precomputed self-term of the reference for the transport term in ``need``
    (FA or OTDD; one of them per call). ``mask`` (B, L) marks the real steps of padded sequences;
    padded tokens are left out of every mean. FA's ``eps`` is relative to ``ref.scale`` (the source cloud's mean squared
    pairwise distance), fixed per reference so that ``OT(cloud, cloud)`` is computed once.
    """
    out: dict[str, torch.Tensor] = {}
    u = embedder(x, mask)  # (B, T, d)
    tmask = embedder.token_mask(mask)
    if "fa" in need:
        out["fa"] = sinkhorn_divergence(
            masked_mean(u, tmask).float(), ref.cloud, cfg.eps, cfg.sinkhorn_iters, ot_yy=ot_yy, scale=ref.scale
        )
    if "otdd" in need:
        pooled = masked_mean(u, tmask).float()
        out["otdd"] = otdd(ref.labelled, pooled, labels, cfg.eps, cfg.sinkhorn_iters, ot_ss=ot_yy, scale=ref.otdd_scale)
    if "fld" in need:
        probs = torch.softmax(ref.head(masked_mean(body(u, tmask), tmask)).float(), dim=-1)
        out["fld"] = feature_label_distortion(probs, labels, cfg.fld_variant)
    return out


def _rows(mask: torch.Tensor | None, idx: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    return None if mask is None else mask[idx].to(device)


class _Resumable:
    """Saves and restores everything a loop needs to continue bit-identically after a kill.

    That is the modules' weights, the optimiser and scheduler, the loop's generator, the global
    torch RNG (dropout), and the loop's own progress (JSON) and tensors. Saves happen every
    ``every`` optimiser steps and at the end of each epoch; without a checkpoint nothing is saved.
    """

    def __init__(
        self,
        ckpt: TrainingCheckpoint | None,
        every: int | None,
        gen: torch.Generator,
        modules: dict[str, nn.Module],
        opt: torch.optim.Optimizer,
        sched: torch.optim.lr_scheduler.LRScheduler | None = None,
        write: bool = True,
    ) -> None:
        self.ckpt, self.every, self.gen, self.modules, self.opt, self.sched = ckpt, every, gen, modules, opt, sched
        self.write = write

    def restore(self) -> tuple[dict, dict[str, torch.Tensor]] | None:
        """Load the checkpoint into the modules, optimiser and RNGs; returns (progress, tensors)."""
        loaded = self.ckpt.load() if self.ckpt is not None else None
        if loaded is None:
            return None
        tensors, meta = loaded
        for name, module in self.modules.items():
            prefix = f"{name}."
            module.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        load_optimizer_state(self.opt, tensors, meta["optimizer"])
        if self.sched is not None:
            self.sched.load_state_dict(meta["scheduler"])
        self.gen.set_state(tensors["rng.loop"])
        torch.set_rng_state(tensors["rng.torch"])
        return meta["progress"], {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}

    def save(self, progress: dict, extra: dict[str, torch.Tensor], step: int | None = None) -> None:
        """Checkpoint now (``step`` None: end of epoch) or when ``step`` is a multiple of ``every``."""
        if not self.write or self.ckpt is None or (step is not None and (not self.every or step % self.every)):
            return
        tensors = {f"{n}.{k}": v for n, m in self.modules.items() for k, v in m.state_dict().items()}
        opt_tensors, opt_meta = optimizer_state(self.opt)
        tensors.update(opt_tensors)
        tensors.update({f"extra.{k}": v for k, v in extra.items()})
        tensors["rng.loop"] = self.gen.get_state()
        tensors["rng.torch"] = torch.get_rng_state()
        meta = {"progress": progress, "optimizer": opt_meta}
        if self.sched is not None:
            meta["scheduler"] = self.sched.state_dict()
        self.ckpt.save(tensors, meta)


def align_steps(n: int, cfg: AlignParams) -> tuple[int, int]:
    """Stage 1's (steps per epoch, epochs) for ``n`` samples: full batches, capped by ``cfg.steps_per_epoch``."""
    steps = max(1, n // cfg.batch_size)
    if cfg.steps_per_epoch is not None:
        steps = min(steps, cfg.steps_per_epoch)
    return steps, cfg.epochs


def fit_steps(n: int, cfg: FitParams) -> tuple[int, int]:
    """Stage 2's (steps per epoch, epochs) for ``n`` samples: ``cfg.epochs``, or more to reach
    ``cfg.min_steps`` optimiser steps. Early stopping may end sooner."""
    steps = -(-n // cfg.batch_size)
    return steps, max(cfg.epochs, -(-cfg.min_steps // steps))


def _class_members(labels: torch.Tensor) -> list[torch.Tensor]:
    """Indices of each class (or pseudo-label) of ``labels`` (N,), in class order."""
    return [torch.nonzero(labels == k).flatten() for k in torch.unique(labels)]


def _draw(
    members: list[torch.Tensor] | None, perm: torch.Tensor, step: int, cfg: AlignParams, gen: torch.Generator
) -> torch.Tensor:
    """One stage-1 batch: ``cfg.per_class`` samples of every class (all of a smaller class), or,
    without ``members``, the ``step``-th slice of the epoch's permutation."""
    if members is None:
        return perm[step * cfg.batch_size : (step + 1) * cfg.batch_size]
    return torch.cat([m[torch.randperm(len(m), generator=gen)[: cfg.per_class]] for m in members])


def _normalisers(objective: str, cfg: AlignParams, n_source_classes: int) -> dict[str, float | None]:
    """Fixed divisors of each stage-1 term in a joint step (``None``: the term's first value).

    FA is divided by its value at the first step; FLD by ``ln C_s``, its range. A term divided by
    its running magnitude instead gets a gradient that grows like 1/|term| when the term nears 0
    (the ``mi`` FLD does), and drowns the other term under Adam. One-term steps are not scaled.
    """
    if objective != "recraft" or cfg.schedule != "joint" or min(cfg.lambda_fa, cfg.lambda_fld) == 0:
        return {}
    return {"fa": None, "fld": math.log(n_source_classes)}


def align_embedder(
    embedder: nn.Module,
    body: Body,
    ref: AlignReference,
    x: torch.Tensor,
    labels: torch.Tensor,
    cfg: AlignParams,
    seed: int,
    device: torch.device,
    on_epoch: OnEpoch = _no_op,
    mask: torch.Tensor | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    checkpoint_every: int | None = None,
    on_step: OnStep = _no_step,
    objective: str = "recraft",
) -> list[dict[str, float]]:
    """Stage 1: minimise the method's alignment objective over ``phi`` only.

    ``objective`` picks the method's stage 1 (:data:`OBJECTIVES`): ``recraft``
    (``lambda_fa * FA + lambda_fld * FLD``), ``fa`` (FA alone) or ``otdd`` (ORCA's OTDD,
    :mod:`components.otdd`; needs ``ref.labels``).

    The body and the source head are frozen (``requires_grad=False``). In the ``joint`` schedule
    each step follows ``lambda_fa * unit(grad FA) + lambda_fld * unit(grad FLD)``
    (:func:`_balanced_backward`: neither term drowns the other), and the reported loss is
    ``lambda_fa * FA / FA_0 + lambda_fld * FLD / ln C_s`` (fixed normalisers, :func:`_normalisers`);
    in the ``sequential`` schedule (the released code's) the first half of the epochs minimises
    FA, the second FLD. With ``cfg.per_class`` every step draws that
    many samples of each class (pseudo-label), so class-conditional terms (FLD, OTDD's Gaussians)
    see every class; otherwise steps walk a shuffled epoch in batches of ``cfg.batch_size``.

    With ``checkpoint``, the loop saves its state every ``checkpoint_every`` steps and after each
    epoch, and a re-run resumes from it with bit-identical results (on CPU).

    Returns:
        One dict per epoch: mean ``fa``, ``fld`` (or ``otdd``) and ``loss`` over the epoch's steps,
        and the first step's ``first_<term>`` values, so each term's decrease can be read off.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown stage-1 objective {objective!r}; choices: {', '.join(OBJECTIVES)}")
    loop = _AlignLoop(embedder, body, ref, x, labels, cfg, seed, device, mask, objective)
    return loop.run(checkpoint, checkpoint_every, on_epoch, on_step)


class _AlignLoop:
    """:func:`align_embedder`'s loop: the frozen reference, the batches, each term's fixed
    normaliser and first value, and what a checkpoint holds to resume it."""

    def __init__(
        self,
        embedder: nn.Module,
        body: Body,
        ref: AlignReference,
        x: torch.Tensor,
        labels: torch.Tensor,
        cfg: AlignParams,
        seed: int,
        device: torch.device,
        mask: torch.Tensor | None,
        objective: str,
    ) -> None:
        self.embedder, self.body, self.x, self.labels, self.mask = embedder, body, x, labels, mask
        self.cfg, self.device, self.objective = cfg, device, objective
        self.gen = torch.Generator().manual_seed(seed)
        for module in (body, ref.head):
            module.eval()
            for p in module.parameters():
                p.requires_grad_(False)
        embedder.train()
        self.opt = torch.optim.AdamW(embedder.parameters(), lr=cfg.lr, weight_decay=0.0)
        cloud = ref.cloud.to(device)
        self.ref = AlignReference(cloud, ref.head, None if ref.labels is None else ref.labels.to(device))
        if objective == "otdd":
            ot_yy = self_entropic_ot(
                self.ref.labelled.self_cost(), cfg.eps, cfg.sinkhorn_iters, scale=self.ref.otdd_scale
            )
        else:
            ot_yy = self_entropic_ot(ot_dist(cloud), cfg.eps, cfg.sinkhorn_iters, scale=self.ref.scale)
        self.ot_yy = ot_yy.detach()
        self.norms = _normalisers(objective, cfg, ref.head.out_features)
        self.members = _class_members(labels) if cfg.per_class is not None else None
        self.steps, _ = align_steps(len(labels), cfg)

    def _needed(self, epoch: int) -> tuple[str, ...]:
        """The terms epoch ``epoch`` minimises."""
        cfg = self.cfg
        if self.objective != "recraft":
            return (self.objective,)
        if cfg.schedule == "sequential":
            return ("fa",) if epoch < max(1, cfg.epochs // 2) else ("fld",)
        return tuple(t for t, lam in (("fa", cfg.lambda_fa), ("fld", cfg.lambda_fld)) if lam > 0)

    def run(
        self, checkpoint: TrainingCheckpoint | None, checkpoint_every: int | None, on_epoch: OnEpoch, on_step: OnStep
    ) -> list[dict[str, float]]:
        history: list[dict[str, float]] = []
        state = _Resumable(checkpoint, checkpoint_every, self.gen, {"embedder": self.embedder}, self.opt)
        progress = {"epoch": 0, "step": 0, "sums": None, "first": {}}
        self.perm = torch.empty(0, dtype=torch.long)
        if (restored := state.restore()) is not None:
            progress, extra = restored
            history = progress["history"]
            self.perm = extra.get("perm", self.perm)
            self.norms.update({k[6:]: float(v) for k, v in extra.items() if k.startswith("scale.")})
        self.first: dict[str, float] = progress.get("first", {})
        global_step = progress["epoch"] * self.steps + progress["step"]
        for epoch in range(progress["epoch"], self.cfg.epochs):
            need = self._needed(epoch)
            resuming = epoch == progress["epoch"] and progress["step"] > 0
            if not resuming and self.members is None:
                self.perm = torch.randperm(len(self.labels), generator=self.gen)
            sums = progress["sums"] if resuming else {"fa": 0.0, "fld": 0.0, "otdd": 0.0, "loss": 0.0}
            for step in range(progress["step"] if resuming else 0, self.steps):
                self._step(step, need, sums)
                global_step += 1
                extra = {"perm": self.perm} | _scale_tensors(self.norms)
                progress = {"epoch": epoch, "step": step + 1, "sums": sums, "history": history, "first": self.first}
                state.save(progress, extra, step=global_step)
                fault_point("align", "step", global_step)  # test-only (components.faults)
                on_step(global_step)
            record = {k: v / self.steps for k, v in sums.items() if k == "loss" or k in need}
            record.update({f"first_{k}": v for k, v in self.first.items() if k in need})
            history.append(record)
            on_epoch(epoch, record)
            progress = {"epoch": epoch + 1, "step": 0, "sums": None, "history": history, "first": self.first}
            state.save(progress, _scale_tensors(self.norms))
        return history

    def _step(self, step: int, need: tuple[str, ...], sums: dict[str, float]) -> None:
        """One optimiser step on the terms ``need``; adds each term's value and the loss to ``sums``."""
        cfg, device, norms = self.cfg, self.device, self.norms
        idx = _draw(self.members, self.perm, step, cfg, self.gen)
        with _autocast(device):
            xb, yb, mb = self.x[idx].to(device), self.labels[idx].to(device), _rows(self.mask, idx, device)
            terms = alignment_terms(self.embedder, self.body, self.ref, xb, yb, cfg, self.ot_yy, need, mb)
        loss = torch.zeros((), device=device)
        for name, value in terms.items():
            lam = {"fa": cfg.lambda_fa, "fld": cfg.lambda_fld}.get(name, 1.0) if self.objective == "recraft" else 1.0
            self.first.setdefault(name, value.item())
            if name in norms and norms[name] is None:  # FA_0: its first value, fixed from here on
                norms[name] = max(abs(value.item()), 1e-12)
            loss = loss + lam * value / norms.get(name, 1.0)
            sums[name] += value.item()
        self.opt.zero_grad(set_to_none=True)
        if norms and len(terms) > 1:
            _balanced_backward(self.embedder, terms, {"fa": cfg.lambda_fa, "fld": cfg.lambda_fld})
        else:
            loss.backward()
        self.opt.step()
        sums["loss"] += loss.item()


def _balanced_backward(embedder: nn.Module, terms: dict[str, torch.Tensor], weights: dict[str, float]) -> None:
    """Set ``phi``'s gradient to ``sum_k lambda_k * grad_k / ||grad_k||`` over the terms.

    Each term contributes a unit direction scaled by its weight, whatever its own scale: with a
    strong source head FLD's gradient is ~100x FA's at the start of stage 1, and a plain sum
    (even of fixed-normalised terms) spends the first steps on FLD alone while FA stays put.
    """
    params = [p for p in embedder.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    names = list(terms)
    for i, name in enumerate(names):
        grads = torch.autograd.grad(terms[name], params, retain_graph=i < len(names) - 1, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        norm = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).clamp_min(1e-12)
        for t, g in zip(total, grads, strict=True):
            t.add_(g, alpha=weights[name] / float(norm))
    for p, t in zip(params, total, strict=True):
        p.grad = t


def _scale_tensors(norms: dict[str, float | None]) -> dict[str, torch.Tensor]:
    """The fixed normalisers as checkpoint tensors (float64, so a resumed run divides by the same)."""
    return {f"scale.{k}": torch.tensor(v, dtype=torch.float64) for k, v in norms.items() if v is not None}


@torch.no_grad()
def predict_scores(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 256, mask: np.ndarray | None = None
) -> np.ndarray:
    """Model outputs as float32 numpy, in eval mode (logits, or predictions for regression/fields)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(x), batch_size):
        m = None if mask is None else torch.from_numpy(mask[i : i + batch_size]).to(device)
        with _autocast(device):
            out.append(model(torch.from_numpy(x[i : i + batch_size]).to(device), m).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def _reverse_complement(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flip a random half of one-hot DNA (B, 4, L) to its reverse complement (ACGT -> TGCA, reversed)."""
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = x.clone()
    x[flip] = x[flip].flip(1).flip(2)
    return x


def fit_model(
    model: CrossModalModel,
    train: Split,
    val: Split,
    cfg: FitParams,
    metric: str,
    seed: int,
    device: torch.device,
    augment_rc: bool = False,
    on_epoch: OnEpoch = _no_op,
    checkpoint: TrainingCheckpoint | None = None,
    checkpoint_every: int | None = None,
    on_step: OnStep = _no_step,
    log_every: int | None = None,
    on_log: OnEpoch = _no_op,
) -> tuple[CrossModalModel, list[dict[str, float]]]:
    """Stage 2: train on the task loss; keep the weights of the best validation epoch.

    The loss follows ``model.task_type`` (:func:`components.losses.task_loss`). Epochs are
    ``cfg.epochs``, or more when needed to reach ``cfg.min_steps`` optimiser steps. Early
    stopping: stop after ``cfg.patience`` epochs without improvement of ``val/<metric>``.

    With ``checkpoint``, the loop saves its state (weights, optimiser, scheduler, RNGs, the
    early-stopping state and the best weights so far) every ``checkpoint_every`` steps and after
    each epoch; a re-run resumes from it with bit-identical results (on CPU).

    A model with a linear skip (:class:`components.model.LinearSkip`) counts its starting point,
    the fitted map, as epoch 0 of the early stopping: the weights returned score at least as well
    on validation as the map alone.

    With ``log_every``, ``on_log(step, {"epoch", "train_loss"})`` receives the mean training loss
    of every ``log_every`` optimiser steps (and of the steps left at the end), so a fit of one
    epoch still draws a learning curve. A resumed run first replays the records its checkpoint
    holds, so a caller that collects them gets the whole curve.

    Returns:
        The model holding the best weights, and one dict per epoch (``step``, the optimiser steps
        taken by its end, ``train_loss``, ``val_*``).
    """
    hooks = (on_epoch, on_step, on_log)
    loop = _FitLoop(
        model, train, val, cfg, metric, seed, device, augment_rc, checkpoint, checkpoint_every, log_every, hooks
    )
    return loop.run()


def _fit_optimizer(model: CrossModalModel, cfg: FitParams) -> torch.optim.AdamW:
    """AdamW over the head (``cfg.head_lr``), ``phi`` and the body (``cfg.lr``).

    ``phi`` trains at the body's rate unless told otherwise (the released codes use one rate): a
    much larger rate lets stage 2 undo stage 1's alignment within a few steps.
    """
    phi = [p for p in model.embedder.parameters() if p.requires_grad]
    groups = [{"params": list(model.head.parameters()), "lr": cfg.head_lr}]
    if phi:
        groups.append({"params": phi, "lr": cfg.lr if cfg.embedder_lr is None else cfg.embedder_lr})
    groups.append({"params": list(model.body.parameters()), "lr": cfg.lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def _warmup_decay(opt: torch.optim.Optimizer, warmup_fraction: float, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay to 0 over the whole budget of ``total`` steps: with few
    epochs, the decay is what turns a noisy last step into a good final model."""
    warmup = max(1, int(warmup_fraction * total))
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min((step + 1) / warmup, max(0.0, (total - step) / max(1, total - warmup)))
    )


class _FitLoop:
    """:func:`fit_model`'s loop and its state: the early stopping, the best weights so far, the
    step-level curve, and what a checkpoint holds to resume it."""

    def __init__(
        self,
        model: CrossModalModel,
        train: Split,
        val: Split,
        cfg: FitParams,
        metric: str,
        seed: int,
        device: torch.device,
        augment_rc: bool,
        checkpoint: TrainingCheckpoint | None,
        checkpoint_every: int | None,
        log_every: int | None,
        hooks: tuple[OnEpoch, OnStep, OnEpoch],
    ) -> None:
        self.model, self.val, self.cfg, self.metric, self.device = model, val, cfg, metric, device
        self.augment_rc, self.log_every = augment_rc, log_every
        self.on_epoch, self.on_step, self.on_log = hooks
        self.gen = torch.Generator().manual_seed(seed)
        model.to(device)
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.freeze_embedder:
            for p in model.embedder.parameters():
                p.requires_grad_(False)
        self.world = current_world()
        # Under torchrun every rank runs this loop on its shard of the same global batch; DDP keeps
        # the replicas identical (the body's unused token embeddings make find_unused_parameters needed).
        self.net = (
            nn.parallel.DistributedDataParallel(model, find_unused_parameters=True, device_ids=None)
            if self.world.distributed
            else model
        )
        self.opt = _fit_optimizer(model, cfg)
        self.xt, self.yt = torch.from_numpy(train.x), torch.from_numpy(train.y)
        self.mt = None if train.mask is None else torch.from_numpy(train.mask)
        self.steps_per_epoch, self.epochs = fit_steps(len(self.yt), cfg)
        self.sched = _warmup_decay(self.opt, cfg.warmup_fraction, self.epochs * self.steps_per_epoch)
        self.sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
        self.target_std = model.target_std.detach().cpu().numpy()
        self.weights = None
        if cfg.balanced and model.task_type in ("binary", "multiclass"):
            self.weights = class_weights(self.yt, model.head.out_features).to(device)
        self.history: list[dict[str, float]] = []
        # Other ranks restore the same state as rank 0 but never write it.
        modules = {"model": model}
        self.state = _Resumable(checkpoint, checkpoint_every, self.gen, modules, self.opt, self.sched, self.world.main)
        self.perm: torch.Tensor | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        # The step-level curve: its records so far and the (sum, count) of step losses not yet logged.
        self.curve: list[dict[str, float]] = []
        self.window = [0.0, 0]

    def run(self) -> tuple[CrossModalModel, list[dict[str, float]]]:
        progress = self._restore()
        for epoch in range(progress["epoch"], 0 if progress["stopped"] else self.epochs):
            self.model.train()
            resuming = epoch == progress["epoch"] and progress["step"] > 0
            if not resuming:
                self.perm = torch.randperm(len(self.yt), generator=self.gen)
            seen_loss = progress["seen_loss"] if resuming else 0.0
            for step in range(progress["step"] if resuming else 0, self.steps_per_epoch):
                seen_loss = self._step(epoch, step, seen_loss)
            if self._validate(epoch, seen_loss):
                break
        if self.log_every and self.window[1]:  # the steps since the last record
            self._log_window(len(self.history) - 1)
        if self.best_state is None:
            last = self.history[-1] if self.history else "no epochs ran"
            raise RuntimeError(f"no validation score was finite: {last}")
        self.model.load_state_dict(self.best_state)
        return self.model, self.history

    def _restore(self) -> dict:
        """Resume from the checkpoint, if any; a fresh linear-skip model scores its start first."""
        progress = {"epoch": 0, "step": 0, "seen_loss": 0.0, "best_score": None, "bad_epochs": 0, "stopped": False}
        if (restored := self.state.restore()) is not None:
            progress, extra = restored
            self.history = progress["history"]
            self.curve, self.window = progress.get("curve", []), progress.get("window", [0.0, 0])
            if self.world.main:
                for record in self.curve:
                    self.on_log(int(record["step"]), {k: v for k, v in record.items() if k != "step"})
            self.perm = extra.get("perm")
            best = {k[5:]: v for k, v in extra.items() if k.startswith("best.")}
            self.best_state = best or None
        self.best_score = -float("inf") if progress["best_score"] is None else progress["best_score"]
        self.bad_epochs = progress["bad_epochs"]
        self.global_step = progress["epoch"] * self.steps_per_epoch + progress["step"]
        if restored is None and self.model.skip is not None:
            # A model that starts as a fitted linear map competes with its own start: fitting never
            # returns weights that score worse on validation than the map alone.
            start = self._val_metrics()
            self.best_score, self.best_state = self.sign * start[self.metric], copy.deepcopy(self.model.state_dict())
        return progress

    def _val_metrics(self) -> dict[str, float]:
        val = self.val
        scores = predict_scores(self.model, val.x, self.device, mask=val.mask)
        return compute_metrics(self.model.task_type, scores, val.y, self.target_std)

    def _step(self, epoch: int, step: int, seen_loss: float) -> float:
        """One optimiser step on the ``step``-th batch of the epoch; returns the epoch's summed loss."""
        model, world, device = self.model, self.world, self.device
        idx = self.perm[step * self.cfg.batch_size : (step + 1) * self.cfg.batch_size]
        xb = _reverse_complement(self.xt[idx], self.gen) if self.augment_rc else self.xt[idx]
        scale, n_global = 1.0, len(idx)
        if world.distributed:
            mine = shard(idx, world)
            per_sample = None if self.weights is None else self.weights.cpu()[self.yt[idx]]
            scale = shard_scale(mine, len(idx), world, per_sample)
            idx, xb = idx[mine], xb[mine]
        with _autocast(device):
            out = self.net(xb.to(device), _rows(self.mt, idx, device))
        loss = task_loss(model.task_type, out, self.yt[idx].to(device), model.target_std, self.weights)
        self.opt.zero_grad(set_to_none=True)
        (loss * scale if world.distributed else loss).backward()
        if self.cfg.grad_clip is not None:
            # Post-LN bodies can collapse to a constant output after one large early step.
            nn.utils.clip_grad_norm_(model.parameters(), self.cfg.grad_clip)
        self.opt.step()
        self.sched.step()
        # The global batch's mean loss (on every rank, so a resumed replica agrees).
        step_loss = all_sum(loss.item() * scale / world.size, world, device)
        seen_loss += step_loss * n_global
        self.global_step += 1
        if self.log_every:
            self.window[0] += step_loss
            self.window[1] += 1
            if self.global_step % self.log_every == 0:
                self._log_window(epoch)
        self.state.save(*self._snapshot(epoch, step + 1, seen_loss), step=self.global_step)
        fault_point("fit", "step", self.global_step)  # test-only (components.faults)
        if world.main:
            self.on_step(self.global_step)
        return seen_loss

    def _validate(self, epoch: int, seen_loss: float) -> bool:
        """The epoch's record and the early stopping; True when patience has run out."""
        record = {"step": float(self.global_step), "train_loss": seen_loss / len(self.yt)}
        record.update({f"val_{k}": v for k, v in self._val_metrics().items()})
        self.history.append(record)
        if self.world.main:
            self.on_epoch(epoch, record)
        score = self.sign * record[f"val_{self.metric}"]
        stop = False
        if score > self.best_score:
            self.best_score, self.best_state, self.bad_epochs = score, copy.deepcopy(self.model.state_dict()), 0
        else:
            self.bad_epochs += 1
            stop = self.bad_epochs >= self.cfg.patience
        self.state.save(*self._snapshot(epoch + 1, 0, 0.0, stopped=stop))
        return stop

    def _snapshot(self, epoch: int, step: int, seen_loss: float, stopped: bool = False) -> tuple[dict, dict]:
        finite = self.best_score if self.best_score != -float("inf") else None
        prog = {
            "epoch": epoch,
            "step": step,
            "seen_loss": seen_loss,
            "best_score": finite,
            "bad_epochs": self.bad_epochs,
            "stopped": stopped,
            "history": self.history,
            "curve": self.curve,
            "window": self.window,
        }
        extra = {f"best.{k}": v for k, v in (self.best_state or {}).items()}
        if step > 0:
            extra["perm"] = self.perm
        return prog, extra

    def _log_window(self, epoch: int) -> None:
        record = {"epoch": float(epoch), "train_loss": self.window[0] / self.window[1]}
        self.curve.append({"step": float(self.global_step), **record})
        self.window[:] = [0.0, 0]
        if self.world.main:
            self.on_log(self.global_step, record)
