"""Stage ``tune``: the Optuna search (flows/tune.py) when ``use_tuned: true``; otherwise a record
that none ran."""

from __future__ import annotations

import shutil
import time

import yaml
from prefect import flow

from components.atomic import write_json, write_text
from flows.stages.context import StageContext
from flows.tune import run_search

__all__ = ["tune"]


@flow(name="tune")
def tune(ctx: StageContext, search: bool | None = None, storage_url: str | None = None) -> dict:
    """The ``tune`` stage: the search when ``use_tuned: true``; otherwise a record that none ran.

    Either way ``params.tuned.yaml`` and ``metrics/tune.json`` exist afterwards, so DVC sees the
    same outputs; with ``use_tuned: false`` the file holds no values and nothing reads it.

    Args:
        search: search regardless of ``use_tuned`` (``recraft tune``).
        storage_url: Optuna storage (default: ``RECRAFT_OPTUNA_STORAGE``, else SQLite in the workspace).
    """
    started = time.perf_counter()
    if ctx.params.use_tuned if search is None else search:
        summary = run_search(ctx, storage_url)
    else:
        # dvc.yaml declares plots/tune: a placeholder figure says that no search ran.
        from flows import figures  # matplotlib loads in the stages that draw

        note = "# use_tuned is false: no search ran and the pipeline uses params.yaml as it is.\n"
        write_text(ctx.layout.tuned_params, note + yaml.safe_dump({"values": {}}))
        shutil.rmtree(ctx.layout.plot("tune"), ignore_errors=True)
        figures.epoch_curves(
            [],
            [],
            ctx.layout.plot("tune") / "history.png",
            "Optuna search",
            empty_message="no search (use_tuned: false)",
        )
        summary = {"searched": False}
    summary["seconds"] = time.perf_counter() - started
    write_json(ctx.layout.metrics("tune"), summary)
    return summary
