"""Stage ``prepare``: validation (and test) splits, normalisation and FLD's label groups."""

from __future__ import annotations

import time

from prefect import flow

from components import assets as assets_lib
from components import recipe
from components.atomic import atomic_dir, write_json
from components.data import save_split, write_meta
from components.tasks import get_task
from flows.params import flatten
from flows.stages.context import StageContext

__all__ = ["prepare"]


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
