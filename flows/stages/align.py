"""Stage ``align`` (stage 1): learn the target embedder ``phi`` with the body and source head frozen."""

from __future__ import annotations

import shutil
import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import recipe
from components.align_loop import align_steps
from components.atomic import write_json
from components.checkpoints import save_checkpoint
from components.data import CLASSIFICATION, Split, load_split
from flows.params import flatten
from flows.plots import write_curve
from flows.progress import step_progress
from flows.stages.context import StageContext, stage_checkpoint

__all__ = ["align"]


@task(name="align-embedder", tags=["gpu"], cache_policy=NO_CACHE)
def _align_task(ctx: StageContext, embedder, body, ref, train: Split, on_epoch, checkpoint) -> list[dict[str, float]]:
    steps, epochs = align_steps(len(train), ctx.params.align)
    with step_progress("align", steps * epochs) as on_step:
        return recipe.align(ctx.job, embedder, body, ref, train, on_epoch, checkpoint, on_step)


@flow(name="align")
def align(ctx: StageContext) -> dict[str, float]:
    """Stage 1: learn the target embedder ``phi`` (body and source head frozen)."""
    started = time.perf_counter()
    meta = recipe.load_meta(ctx.layout)
    embedder, body, cfg, ref = recipe.new_embedder(ctx.job, meta)
    history: list[dict[str, float]] = []
    with ctx.tracker().stage("align", flatten(ctx.params), ctx.tags, system_metrics=True) as run:
        train = load_split(ctx.layout.prepared_dir / "train.npz")
        before = recipe.pooled_embeddings(embedder, train)
        if recipe.aligns(ctx.params):
            inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.source_dir / "cloud.safetensors"]
            ckpt = stage_checkpoint(ctx, "align", inputs)
            log = lambda e, r: run.metrics(r, step=e, prefix="align")  # noqa: E731
            history = _align_task(ctx, embedder, body, ref, train, log, ckpt)
        save_checkpoint(ctx.layout.embedder_dir, embedder, cfg.to_json())
        summary = {f"align/{k}": v for k, v in (history[-1] if history else {}).items()}
        summary["seconds"] = time.perf_counter() - started
        write_json(ctx.layout.metrics("align"), summary)
        write_curve(ctx.layout.plot("align.csv"), history)
        kind = "class" if meta.task_type in CLASSIFICATION else "pseudo-label"
        n = len(before)
        from flows import figures  # matplotlib loads in the stages that draw

        figures.alignment_projection(
            ref.cloud.numpy(),
            before,
            recipe.pooled_embeddings(embedder.cpu(), train),
            train.groups[:n],
            meta.class_names or None,
            ctx.layout.plot("alignment.png"),
            label_kind=kind,
        )
        figures.epoch_curves(history, ["fa", "fld", "loss"], ctx.layout.plot("align.png"), "Stage 1: alignment")
        for name in ("alignment.png", "align.png"):
            run.artifact(ctx.layout.plot(name), "plots")
        run.metrics({"seconds/align": summary["seconds"]})
    shutil.rmtree(ctx.layout.checkpoint_dir("align"), ignore_errors=True)  # outputs are complete
    return summary
