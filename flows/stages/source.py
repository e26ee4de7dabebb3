"""Stage ``source`` (stage 0): the source feature cloud and the Lipschitz-regularised source head."""

from __future__ import annotations

import time

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import recipe
from components.atomic import atomic_dir, write_json
from components.source import save_source, source_summary
from flows.params import flatten
from flows.plots import write_curve
from flows.stages.context import StageContext

__all__ = ["source"]


@task(name="train-source-head", tags=["gpu"], cache_policy=NO_CACHE)
def _source_task(ctx: StageContext) -> dict:
    return recipe.train_source(ctx.job)


@flow(name="source")
def source(ctx: StageContext) -> dict[str, float]:
    """Stage 0: the source feature cloud and the Lipschitz-regularised source head."""
    started = time.perf_counter()
    recipe.seed_everything(ctx.params.seed)
    with ctx.tracker().stage("source", flatten(ctx.params), ctx.tags) as run:
        out = _source_task(ctx)
        for epoch, record in enumerate(out["history"]):
            run.metrics(record, step=epoch, prefix="source")
        summary = source_summary(out, time.perf_counter() - started)
        with atomic_dir(ctx.layout.source_dir) as d:  # cloud, head and summary together or not at all
            save_source(d, out, summary)
        write_json(ctx.layout.metrics("source"), summary)
        write_curve(ctx.layout.plot("source.csv"), out["history"])
        run.metrics({"bound/lipschitz": summary["lipschitz"], "seconds/source": summary["seconds"]})
    return summary
