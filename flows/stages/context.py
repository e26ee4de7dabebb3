"""What every stage runs with: the :class:`StageContext` and the resumable-state key of a stage."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from components import recipe
from components.checkpoints import TrainingCheckpoint
from components.config import Params
from components.device import select_device
from components.layout import Layout
from components.wheels import sha256_file
from flows.params import flatten
from flows.settings import Settings
from flows.tracking.runs import Tracker

__all__ = ["StageContext", "make_context", "stage_checkpoint"]


@dataclass(frozen=True)
class StageContext:
    """Everything a stage needs besides its inputs on disk."""

    params: Params
    settings: Settings
    layout: Layout
    device: torch.device

    @property
    def tags(self) -> dict[str, str]:
        return {"task": self.params.task, "method": self.params.method, "seed": str(self.params.seed)}

    def tracker(self) -> Tracker:
        return Tracker(self.settings, self.layout.root)

    @property
    def job(self) -> recipe.Job:
        """What the recipe (components/recipe.py) computes with: params, layout, device, and the
        settings' checkpoint and logging intervals."""
        s = self.settings
        return recipe.Job(self.params, self.layout, self.device, s.checkpoint_every, s.log_every)


def make_context(params: Params, settings: Settings, root: Path) -> StageContext:
    """Bind params, settings, the workspace layout and the device (chosen here, once)."""
    return StageContext(params=params, settings=settings, layout=Layout(root), device=select_device(settings.device))


def stage_checkpoint(ctx: StageContext, stage: str, inputs: list[Path]) -> TrainingCheckpoint | None:
    """The stage's resumable state, keyed by its params and the sha256 of its input files; None
    when checkpoints are off (``RECRAFT_CHECKPOINT_EVERY=0``)."""
    if ctx.settings.checkpoint_every == 0:
        return None
    digest = hashlib.sha256(json.dumps(flatten(ctx.params), sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(sha256_file(path).encode())
    return TrainingCheckpoint(ctx.layout.checkpoint_dir(stage), digest.hexdigest())
