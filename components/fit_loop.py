"""Stage 2: fine-tune ``phi + g + h_t`` on the task loss, with early stopping on validation data."""

import copy

import torch
from torch import nn

from components.checkpoints import TrainingCheckpoint
from components.config import FitParams
from components.data import Split
from components.distributed import all_sum, current_world, shard, shard_scale
from components.faults import fault_point
from components.losses import class_weights, task_loss
from components.metrics import HIGHER_IS_BETTER, compute_metrics
from components.model import CrossModalModel
from components.training import (
    OnEpoch,
    OnStep,
    Resumable,
    autocast,
    batch_rows,
    no_epoch_hook,
    no_step_hook,
    predict_scores,
)

__all__ = ["fit_model", "fit_steps"]


def fit_steps(n: int, cfg: FitParams) -> tuple[int, int]:
    """Stage 2's (steps per epoch, epochs) for ``n`` samples: ``cfg.epochs``, or more to reach
    ``cfg.min_steps`` optimiser steps. Early stopping may end sooner."""
    steps = -(-n // cfg.batch_size)
    return steps, max(cfg.epochs, -(-cfg.min_steps // steps))


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
    on_epoch: OnEpoch = no_epoch_hook,
    checkpoint: TrainingCheckpoint | None = None,
    checkpoint_every: int | None = None,
    on_step: OnStep = no_step_hook,
    log_every: int | None = None,
    on_log: OnEpoch = no_epoch_hook,
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
        self.state = Resumable(checkpoint, checkpoint_every, self.gen, modules, self.opt, self.sched, self.world.main)
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
        with autocast(device):
            out = self.net(xb.to(device), batch_rows(self.mt, idx, device))
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
