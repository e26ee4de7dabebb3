"""Stage ``evaluate``: test metrics (the only read of the test split), bound terms, the model."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
from prefect import flow

from components import recipe
from components.atomic import write_json
from components.checkpoints import load_checkpoint
from components.data import CLASSIFICATION, PreparedMeta, Split, load_split
from components.errors import CheckpointError
from components.metrics import compute_metrics, is_collapsed
from components.reference import references
from components.spec import ModelSpec
from components.training import predict_scores
from flows.lineage import dvc_md5, lineage_tags
from flows.params import flatten
from flows.stages.context import StageContext
from flows.tracking.runs import runtime_tags

__all__ = ["evaluate"]


def _evaluation_figures(ctx: StageContext, meta: PreparedMeta, result: dict, test: Split, scores: np.ndarray) -> list:
    """Confusion matrix (classification) or true vs predicted fields, and the bound report."""
    from components.metrics import confusion_matrix
    from flows import eval_figures  # matplotlib loads in the stages that draw

    out = ctx.layout.plot("evaluate")
    shutil.rmtree(out, ignore_errors=True)  # which figures exist depends on the task type
    paths = []
    if meta.task_type in CLASSIFICATION:
        counts = confusion_matrix(scores, test.y, meta.n_classes)
        paths.append(eval_figures.confusion_matrix(counts, meta.class_names, out / "confusion.png"))
    elif meta.task_type == "field":
        paths.append(eval_figures.field_predictions(test.x, test.y, scores, out / "fields.png"))
    metric = meta.metric
    error = result[f"test/{metric}"]
    row = {k: v for k, v in result.items() if k.startswith("bound/")}
    row["test_error"] = 1.0 - error if meta.higher_is_better else error
    paths.append(eval_figures.bound_report([row], out / "bound.png"))
    return paths


@flow(name="evaluate")
def evaluate(ctx: StageContext) -> dict:
    """Test metrics (the only read of the test split), bound terms, the metrics JSON, the model."""
    started = time.perf_counter()
    meta = recipe.load_meta(ctx.layout)
    # The architecture the fit stage saved (a model fitted before a params change still loads).
    try:
        skip = ModelSpec.read(ctx.layout.model_dir / "config.json").linear_skip
    except CheckpointError:
        skip = False  # load_checkpoint below says what is wrong with it
    model = recipe.build_model(ctx.job, meta, skip=skip)
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
        from flows.tracking.registry import log_and_register

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
