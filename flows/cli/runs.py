"""``recraft run``, ``tune``, ``stage`` (what dvc.yaml calls) and ``repro``: the pipeline's commands."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from components.errors import UserError
from flows.cli import common
from flows.cli.common import build_params, default_workdir, exits_on_error, print_result

__all__ = ["run", "tune", "stage", "repro"]


@exits_on_error
def run(
    task: Annotated[str | None, typer.Option(help="registered task (default: params file)")] = None,
    method: Annotated[str | None, typer.Option(help="scratch, nft, fa, orca or recraft (default: params file)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: params file)")] = None,
    budget: Annotated[
        str,
        typer.Option(help="full (params as they are), quick (subset, few epochs), released (released code's epochs)"),
    ] = "full",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set align.lambda_fld=0.5")] = None,
    params: Annotated[
        Path | None, typer.Option(help="params file to start from (default: ./params.yaml if present, else defaults)")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="work directory (default runs/TASK-METHOD-SEED)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Run the whole pipeline (assets to evaluate) in a work directory, outside DVC."""
    from flows.settings import load_settings

    p = build_params(task, method, seed, budget, set_, params)
    settings = load_settings()
    root = workdir or default_workdir(p)
    common.preflight(p, settings, root)
    result = _run_pipeline(p, settings, root)
    if metrics_out is not None:
        from components.atomic import write_json

        write_json(metrics_out, result)
    print_result(result)


@exits_on_error
def tune(
    task: Annotated[str | None, typer.Option(help="registered task (default: params file)")] = None,
    trials: Annotated[int | None, typer.Option(help="trials in the study (tune.n_trials)")] = None,
    storage: Annotated[
        str | None, typer.Option(help="Optuna RDB URL (default: RECRAFT_OPTUNA_STORAGE, else WORKDIR/optuna.db)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="processes sharing the study (tune.n_workers)")] = None,
    target: Annotated[str | None, typer.Option(help="val (validation metric) or bound (label-free)")] = None,
    method: Annotated[str | None, typer.Option(help="method whose coefficients are searched")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: params file)")] = None,
    budget: Annotated[str, typer.Option(help="quick or full (stage-0 budget)")] = "full",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set tune.max_train=800")] = None,
    params: Annotated[Path | None, typer.Option(help="params file to start from")] = None,
    workdir: Annotated[Path | None, typer.Option(help="work directory (default runs/TASK-METHOD-SEED)")] = None,
) -> None:
    """Search the stage-1/2 coefficients with Optuna on validation data; write params.tuned.yaml.

    Runs assets, prepare and source first when needed (resuming like ``run``), then continues
    the study up to the requested trials. Use the result with ``recraft run --workdir SAME
    --set use_tuned=true`` (or ``use_tuned: true`` in params.yaml and ``dvc repro``).
    """
    from flows.settings import load_settings

    extra = (("tune.n_trials", trials), ("tune.n_workers", workers), ("tune.target", target))
    p = build_params(task, method, seed, budget, set_, params, extra)
    # --storage through the settings, not a flow parameter: Prefect stores those, passwords too.
    settings = load_settings(**({"optuna_storage": storage} if storage else {}))
    root = workdir or default_workdir(p)
    common.preflight(p, settings, root)
    from flows.pipeline import make_context, pipeline
    from flows.stages import tune as tune_stage

    ctx = make_context(p, settings, root)
    pipeline(ctx, stop="source")
    summary = tune_stage.tune(ctx, search=True)
    _print_tune(summary, root)


def _print_tune(summary: dict, root: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"study {summary['study']} ({summary['direction']} {summary['target']})")
    for col in ("trial", "state", "value", "params"):
        table.add_column(col)
    for t in summary["trials"]:
        value = "" if t["value"] is None else f"{t['value']:.4f}"
        mark = " *" if t["number"] == summary["best_trial"] else ""
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        table.add_row(f"{t['number']}{mark}", t["state"], value, shown)
    console = Console(file=sys.stdout)
    console.print(table)
    if summary.get("confirmed"):
        full = Table(title="confirmed at the full budget (as the pipeline runs them; the best is written)")
        for col in ("candidate", "budget value", "full value"):
            full.add_column(col)
        for row in summary["confirmed"]:
            budget = "" if row["budget_value"] is None else f"{row['budget_value']:.4f}"
            mark = " *" if row["candidate"] == summary["selected"] else ""
            full.add_row(f"{row['candidate']}{mark}", budget, f"{row['value']:.4f}")
        console.print(full)
    typer.echo(f"best values: {root / 'params.tuned.yaml'} ({summary.get('selected')})")
    typer.echo(f"use them:    recraft run --workdir {root} --set use_tuned=true")


def _run_pipeline(p, settings, root: Path) -> dict:
    from flows.pipeline import ORDER, finished_stages, make_context, pipeline

    ctx = make_context(p, settings, root)
    done = finished_stages(ctx)
    if done:
        rest = ", ".join(ORDER[len(done) :]) or "nothing (the run is complete)"
        typer.echo(f"resuming in {root}: {', '.join(done)} already finished; running {rest}", err=True)
    return pipeline(ctx)


@exits_on_error
def stage(
    name: Annotated[str, typer.Argument(help="assets, prepare, source, tune, align, fit or evaluate")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Run one stage in the current directory (this is what dvc.yaml calls).

    Without ``PREFECT_API_URL`` the stage runs against the workspace's shared local Prefect server
    (started by the first stage, stopped when idle: flows/prefect_local.py), so a plain
    ``dvc repro`` starts one server, not one per stage.
    """
    from contextlib import ExitStack

    with ExitStack() as stack:
        server = None
        if not os.environ.get("PREFECT_API_URL"):  # the lease first: it keeps a running server up
            from flows.prefect_local import workspace_prefect_server

            server = stack.enter_context(workspace_prefect_server(Path(".")))
        from components.layout import ORDER
        from flows.params import load_params
        from flows.settings import load_settings

        if name not in ORDER:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(ORDER)}")
        p = load_params(params, complete=True)
        settings = load_settings()
        common.preflight(p, settings, Path("."))
        if server is not None:  # read when prefect is imported, just below
            os.environ["PREFECT_API_URL"] = server.url()
        from flows.pipeline import make_context, run_stage

        started = time.perf_counter()
        result = run_stage(name, make_context(p, settings, Path(".")))
    if name == "evaluate":
        print_result(result)
        typer.echo("Browse the runs: recraft ui   (or: mlflow ui --backend-store-uri sqlite:///mlflow.db)")
    elif os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        typer.echo(f"{name}: done in {time.perf_counter() - started:.1f}s")


@exits_on_error
def repro(ctx: typer.Context) -> None:
    """``dvc repro [ARGS]`` with one shared local Prefect server (unless PREFECT_API_URL is set)."""
    import os
    import subprocess

    dvc = [str(Path(sys.executable).with_name("dvc")), "repro", *ctx.args]
    if os.environ.get("PREFECT_API_URL"):
        raise typer.Exit(subprocess.call(dvc))
    from flows.prefect_local import local_prefect_server

    with local_prefect_server(Path(".prefect") / "server.log") as url:
        code = subprocess.call(dvc, env={**os.environ, "PREFECT_API_URL": url})
    raise typer.Exit(code)
