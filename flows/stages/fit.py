"""Stage ``fit`` (stage 2): fine-tune ``phi + g + h_t`` with early stopping on validation data."""

from __future__ import annotations

import shutil
import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import recipe
from components.atomic import write_json
from components.checkpoints import save_checkpoint
from components.data import PreparedMeta, Split, load_split
from components.fit_loop import fit_steps
from components.serving import serving_files
from flows.params import flatten
from flows.plots import write_curve
from flows.progress import step_progress
from flows.stages.context import StageContext, stage_checkpoint

__all__ = ["fit", "fit_replica"]


@task(name="fit-model", tags=["gpu"], cache_policy=NO_CACHE)
def _fit_task(ctx: StageContext, model, train: Split, val: Split, meta: PreparedMeta, checkpoint, **callbacks):
    steps, epochs = fit_steps(len(train), ctx.params.fit)
    with step_progress("fit", steps * epochs) as on_step:
        return recipe.fit(ctx.job, model, train, val, meta, checkpoint, on_step=on_step, **callbacks)


@flow(name="fit")
def fit(ctx: StageContext) -> dict[str, float]:
    """Stage 2: fine-tune ``phi + g + h_t`` with early stopping on validation data."""
    started = time.perf_counter()
    meta = recipe.load_meta(ctx.layout)
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    model = recipe.new_model(ctx.job, meta, train, val)
    with ctx.tracker().stage("fit", flatten(ctx.params), ctx.tags, system_metrics=True) as run:
        # MLflow's x axis is the optimiser step: the training loss every settings.log_every
        # steps, the validation metrics at each epoch's end (the epoch's mean training loss
        # stays in plots/fit.csv).
        steps: list[dict[str, float]] = []

        def log_epoch(epoch: int, record: dict[str, float]) -> None:
            del epoch
            val = {k.replace("val_", "val/"): v for k, v in record.items() if k.startswith("val_")}
            run.metrics(val, step=int(record["step"]))

        def log_steps(step: int, record: dict[str, float]) -> None:
            steps.append({"step": step, **record})
            run.metrics({"fit/train_loss": record["train_loss"]}, step=step)

        inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.embedder_dir / "weights.safetensors"]
        checkpoint = stage_checkpoint(ctx, "fit", inputs)
        model, history = _fit_task(ctx, model, train, val, meta, checkpoint, on_epoch=log_epoch, on_log=log_steps)
        save_checkpoint(
            ctx.layout.model_dir,
            model.cpu(),
            recipe.model_config(ctx.params, meta, model.body.hidden_size).to_json(),
            extra_json={"body/config.json": model.body.model.config.to_dict(), **serving_files(meta)},
        )
        summary = {"epochs_run": len(history), "seconds": time.perf_counter() - started}
        write_json(ctx.layout.metrics("fit"), summary)
        write_curve(ctx.layout.plot("fit.csv"), history)
        write_curve(ctx.layout.plot("fit_steps.csv"), steps, index="step")
        keys = ["train_loss", "val_loss", f"val_{meta.metric}"]
        from flows import figures  # matplotlib loads in the stages that draw

        # Training loss per logged window, validation per epoch, both against the optimiser step.
        drawn = sorted(
            [*steps, *({k: v for k, v in r.items() if k != "train_loss"} for r in history)], key=lambda r: r["step"]
        )
        figures.epoch_curves(
            drawn,
            keys,
            ctx.layout.plot("fit.png"),
            "Stage 2: fitting",
            xlabel="optimiser step",
            x="step",
            empty_message="no epochs",
        )
        run.artifact(ctx.layout.plot("fit.png"), "plots")
        run.metrics({"seconds/fit": summary["seconds"]})
    shutil.rmtree(ctx.layout.checkpoint_dir("fit"), ignore_errors=True)  # outputs are complete
    return summary


def fit_replica(ctx: StageContext) -> None:
    """A rank other than 0 of ``torchrun ... recraft stage fit``: the same model, data, seed and
    checkpoint as rank 0, training its shard of every batch; it logs nothing and writes nothing."""
    meta = recipe.load_meta(ctx.layout)
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    model = recipe.new_model(ctx.job, meta, train, val)
    inputs = [ctx.layout.prepared_dir / "train.npz", ctx.layout.embedder_dir / "weights.safetensors"]
    recipe.fit(ctx.job, model, train, val, meta, stage_checkpoint(ctx, "fit", inputs))
