"""What the training loops share: their callbacks, bf16 autocast on CUDA, the checkpoint state
that makes a loop resumable bit-identically, and batched prediction.

The loops themselves: stage 1 in :mod:`components.align_loop`, stage 2 in :mod:`components.fit_loop`.
They report each epoch through an ``on_epoch(epoch, metrics)`` callback, so tracking stays in
``flows/``. Device and seed are explicit arguments.
"""

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from components.checkpoints import TrainingCheckpoint, load_optimizer_state, optimizer_state

__all__ = [
    "OnEpoch",
    "OnStep",
    "no_epoch_hook",
    "no_step_hook",
    "autocast",
    "batch_rows",
    "Resumable",
    "predict_scores",
]

OnEpoch = Callable[[int, dict[str, float]], None]


OnStep = Callable[[int], None]


def no_epoch_hook(epoch: int, metrics: dict[str, float]) -> None:
    del epoch, metrics


def no_step_hook(step: int) -> None:
    del step


def autocast(device: torch.device):
    """bf16 autocast on CUDA; a no-op elsewhere (CPU results stay in float32, bit-reproducible)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def batch_rows(mask: torch.Tensor | None, idx: torch.Tensor, device: torch.device) -> torch.Tensor | None:
    return None if mask is None else mask[idx].to(device)


class Resumable:
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
        with autocast(device):
            out.append(model(torch.from_numpy(x[i : i + batch_size]).to(device), m).float().cpu())
    model.train(was_training)
    return torch.cat(out).numpy()
