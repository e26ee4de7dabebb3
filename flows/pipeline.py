"""The whole pipeline as one Prefect flow (``recraft run``), and single stages (``dvc repro``)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from components.config import Params
from components.device import select_device
from flows.layout import Layout
from flows.settings import Settings
from flows.stages import STAGES, StageContext

__all__ = ["pipeline", "run_stage", "make_context"]

ORDER = ("assets", "prepare", "source", "align", "fit", "evaluate")


def make_context(params: Params, settings: Settings, root: Path) -> StageContext:
    """Bind params, settings, the workspace layout and the device (chosen here, once)."""
    return StageContext(params=params, settings=settings, layout=Layout(root), device=select_device(settings.device))


def run_stage(name: str, ctx: StageContext) -> dict:
    """Run one stage's flow (``recraft stage NAME``, as ``dvc.yaml`` calls it)."""
    return STAGES[name](ctx)


@flow(name="recraft-pipeline")
def pipeline(ctx: StageContext, start: str = "assets") -> dict:
    """assets -> prepare -> source -> align -> fit -> evaluate, in one process and one flow run.

    Args:
        start: skip the stages before this one (their outputs must already be in the workspace).
    """
    result: dict = {}
    for name in ORDER[ORDER.index(start) :]:
        result = STAGES[name](ctx)
    return result
