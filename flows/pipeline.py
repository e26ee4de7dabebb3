"""The whole pipeline as one Prefect flow (``recraft run``), and single stages (``dvc repro``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prefect import flow

from components.atomic import write_json
from components.config import Params
from components.device import select_device
from flows.layout import Layout
from flows.settings import Settings
from flows.stages import STAGES, StageContext

__all__ = ["pipeline", "run_stage", "make_context", "finished_stages", "params_fingerprint"]

ORDER = ("assets", "prepare", "source", "align", "fit", "evaluate")


def make_context(params: Params, settings: Settings, root: Path) -> StageContext:
    """Bind params, settings, the workspace layout and the device (chosen here, once)."""
    return StageContext(params=params, settings=settings, layout=Layout(root), device=select_device(settings.device))


def run_stage(name: str, ctx: StageContext) -> dict:
    """Run one stage's flow (``recraft stage NAME``, as ``dvc.yaml`` calls it)."""
    return STAGES[name](ctx)


def params_fingerprint(params: Params) -> str:
    """sha256 of every param value: a finished stage is reused only under the same params."""
    flat = json.dumps(params.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(flat.encode()).hexdigest()


def finished_stages(ctx: StageContext, stages: tuple[str, ...] = ORDER) -> tuple[str, ...]:
    """The leading ``stages`` that already finished in this workspace under the same params."""
    fingerprint = params_fingerprint(ctx.params)
    done = []
    for name in stages:
        marker = ctx.layout.done_marker(name)
        try:
            if json.loads(marker.read_text()).get("fingerprint") != fingerprint:
                break
        except (OSError, json.JSONDecodeError):
            break
        done.append(name)
    return tuple(done)


@flow(name="recraft-pipeline")
def pipeline(ctx: StageContext, start: str = "assets") -> dict:
    """assets -> prepare -> source -> align -> fit -> evaluate, in one process and one flow run.

    Re-running in the same workspace resumes: the leading stages that finished under the same
    params are skipped (each finished stage leaves a marker with the params' fingerprint), and
    align and fit continue from their last checkpoint.

    Args:
        start: skip the stages before this one (their outputs must already be in the workspace).
    """
    stages = ORDER[ORDER.index(start) :]
    done = finished_stages(ctx, stages)
    fingerprint = params_fingerprint(ctx.params)
    result = json.loads(ctx.layout.metrics("evaluate").read_text()) if "evaluate" in done else {}
    for name in stages[len(done) :]:
        marker = ctx.layout.done_marker(name)
        marker.unlink(missing_ok=True)
        result = STAGES[name](ctx)
        write_json(marker, {"fingerprint": fingerprint, "stage": name})
    return result
