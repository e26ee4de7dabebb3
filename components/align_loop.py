"""Stage 1: align the target embedder ``phi`` to the source (FA, FLD, or ORCA's OTDD), body frozen."""

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from components.alignment import self_entropic_ot, sinkhorn_divergence
from components.bodies import Body, masked_mean
from components.checkpoints import TrainingCheckpoint
from components.config import AlignParams
from components.distortion import feature_label_distortion
from components.faults import fault_point
from components.otdd import LabelledCloud, otdd
from components.training import OnEpoch, OnStep, Resumable, autocast, batch_rows, no_epoch_hook, no_step_hook

__all__ = ["OBJECTIVES", "AlignReference", "align_embedder", "align_steps", "alignment_terms", "ot_dist"]


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


def align_steps(n: int, cfg: AlignParams) -> tuple[int, int]:
    """Stage 1's (steps per epoch, epochs) for ``n`` samples: full batches, capped by ``cfg.steps_per_epoch``."""
    steps = max(1, n // cfg.batch_size)
    if cfg.steps_per_epoch is not None:
        steps = min(steps, cfg.steps_per_epoch)
    return steps, cfg.epochs


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
    With ``cfg.balance == "first"``, ``grad.<term>`` holds the norm of the term's gradient at the
    first step, which then divides that term's gradient at every step (:func:`_balanced_backward`).
    """
    if objective != "recraft" or cfg.schedule != "joint" or min(cfg.lambda_fa, cfg.lambda_fld) == 0:
        return {}
    grads = {"grad.fa": None, "grad.fld": None} if cfg.balance == "first" else {}
    return {"fa": None, "fld": math.log(n_source_classes)} | grads


def align_embedder(
    embedder: nn.Module,
    body: Body,
    ref: AlignReference,
    x: torch.Tensor,
    labels: torch.Tensor,
    cfg: AlignParams,
    seed: int,
    device: torch.device,
    on_epoch: OnEpoch = no_epoch_hook,
    mask: torch.Tensor | None = None,
    checkpoint: TrainingCheckpoint | None = None,
    checkpoint_every: int | None = None,
    on_step: OnStep = no_step_hook,
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
        state = Resumable(checkpoint, checkpoint_every, self.gen, {"embedder": self.embedder}, self.opt)
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
        with autocast(device):
            xb, yb, mb = self.x[idx].to(device), self.labels[idx].to(device), batch_rows(self.mask, idx, device)
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
            _balanced_backward(self.embedder, terms, {"fa": cfg.lambda_fa, "fld": cfg.lambda_fld}, norms)
        else:
            loss.backward()
        self.opt.step()
        sums["loss"] += loss.item()


def _balanced_backward(
    embedder: nn.Module,
    terms: dict[str, torch.Tensor],
    weights: dict[str, float],
    norms: dict[str, float | None],
) -> None:
    """Set ``phi``'s gradient to ``sum_k lambda_k * grad_k / n_k`` over the terms.

    ``n_k`` is ``||grad_k||`` of this step (``balance: unit``), or, where ``norms`` holds
    ``grad.<k>``, that norm at the first step, fixed from then on (``balance: first``). Either way
    each term starts with the same pull whatever its own scale: with a strong source head FLD's
    gradient is ~100x FA's at the start of stage 1, and a plain sum (even of fixed-normalised
    terms) spends the first steps on FLD alone while FA stays put. With per-step unit directions a
    term keeps its full pull after it has reached its minimum (FLD near 0 on dna still moves
    ``phi`` as much as FA does); with first-step norms its gradient, and its pull, shrink with it.
    """
    params = [p for p in embedder.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    names = list(terms)
    for i, name in enumerate(names):
        grads = torch.autograd.grad(terms[name], params, retain_graph=i < len(names) - 1, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
        norm = float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)).clamp_min(1e-12))
        key = f"grad.{name}"
        if key in norms:
            norm = norms[key] = norms[key] or norm
        for t, g in zip(total, grads, strict=True):
            t.add_(g, alpha=weights[name] / norm)
    for p, t in zip(params, total, strict=True):
        p.grad = t


def _scale_tensors(norms: dict[str, float | None]) -> dict[str, torch.Tensor]:
    """The fixed normalisers as checkpoint tensors (float64, so a resumed run divides by the same)."""
    return {f"scale.{k}": torch.tensor(v, dtype=torch.float64) for k, v in norms.items() if v is not None}
