"""``recraft``: the command-line entry point. It calls the same flows as ``dvc repro``.

Exit codes: 0 success; 2 bad input (one line on stderr, nothing written); 1 anything else.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer

from components.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Cross-modal fine-tuning with RECRAFT.")

# Budgets are named sets of overrides, applied before the user's own --set values.
BUDGETS: dict[str, list[str]] = {
    "full": [],
    "quick": ["prepare.max_train=2000", "source.epochs=30", "align.steps_per_epoch=10", "fit.epochs=1"],
}

_state = {"debug": False}


def _fail(exc: BaseException) -> None:
    """Turn an exception into the documented exit code; tracebacks only for bugs or --debug."""
    if isinstance(exc, UserError):
        if _state["debug"]:
            traceback.print_exception(exc)
        typer.echo(f"error: {exc}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        raise typer.Exit(2)
    raise exc


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for input errors")] = False) -> None:
    _state["debug"] = debug
    from flows.settings import configure_prefect

    if debug:  # keep Prefect's own report of a failed flow run
        import os

        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "ERROR")
    configure_prefect()  # before prefect or mlflow are imported: quiet logs, local-mode timeouts


@app.command()
def run(
    task: Annotated[str | None, typer.Option(help="registered task (default: params file)")] = None,
    method: Annotated[str | None, typer.Option(help="recraft or nft (default: params file)")] = None,
    seed: Annotated[int | None, typer.Option(help="random seed (default: params file)")] = None,
    budget: Annotated[str, typer.Option(help="quick (subset, few epochs) or full")] = "full",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set align.lambda_fld=0.5")] = None,
    params: Annotated[
        Path | None, typer.Option(help="params file to start from (default: ./params.yaml if present, else defaults)")
    ] = None,
    workdir: Annotated[Path | None, typer.Option(help="work directory (default runs/TASK-METHOD-SEED)")] = None,
    metrics_out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Run the whole pipeline (assets to evaluate) in a work directory, outside DVC."""
    try:
        from flows.params import load_params
        from flows.settings import load_settings

        if budget not in BUDGETS:
            raise UserError(f"--budget {budget!r} is not one of {', '.join(BUDGETS)}")
        overrides = list(BUDGETS[budget])
        overrides += [f"{k}={v}" for k, v in (("task", task), ("method", method), ("seed", seed)) if v is not None]
        overrides += set_ or []
        if params is None and Path("params.yaml").exists():
            params = Path("params.yaml")
        p = load_params(params, overrides) if params is not None else _defaults(overrides)
        settings = load_settings()
        from components.tasks import task_slug

        root = workdir or Path("runs") / f"{task_slug(p.task)}-{p.method}-{p.seed}"
        _preflight(p, settings, root)
        result = _run_pipeline(p, settings, root)
        if metrics_out is not None:
            from components.atomic import write_json

            write_json(metrics_out, result)
        _print_result(result)
    except Exception as exc:  # noqa: BLE001 - _fail re-raises anything that is not a UserError
        _fail(exc)


def _preflight(p, settings, root: Path) -> None:
    """Checks that fail fast, before any output exists: a user's data file and the stores."""
    from components.tasks import get_task, preflight
    from flows.tracking import Tracker

    preflight(get_task(p.task), p.data)
    if settings.asset_mirror:  # read-only check first: the tracking store may create a database
        from flows.storage import WheelMirror, s3_client

        WheelMirror(settings.asset_mirror, s3_client(settings.s3_endpoint_url, max_attempts=2)).list()
    Tracker(settings, root)  # raises a UserError when the tracking store is unreachable


def _defaults(overrides: list[str]):
    from flows.params import apply_overrides, parse_params

    return parse_params(apply_overrides({}, overrides), source="defaults")


def _run_pipeline(p, settings, root: Path) -> dict:
    from flows.settings import configure_prefect

    configure_prefect()
    from flows.pipeline import ORDER, finished_stages, make_context, pipeline

    ctx = make_context(p, settings, root)
    done = finished_stages(ctx)
    if done:
        rest = ", ".join(ORDER[len(done) :]) or "nothing (the run is complete)"
        typer.echo(f"resuming in {root}: {', '.join(done)} already finished; running {rest}", err=True)
    return pipeline(ctx)


@app.command(hidden=True)
def stage(
    name: Annotated[str, typer.Argument(help="assets, prepare, source, align, fit or evaluate")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Run one stage in the current directory (this is what dvc.yaml calls)."""
    try:
        from flows.settings import configure_prefect, load_settings

        configure_prefect()
        from flows.params import load_params
        from flows.pipeline import ORDER, make_context, run_stage

        if name not in ORDER:
            raise UserError(f"unknown stage {name!r}; stages: {', '.join(ORDER)}")
        p = load_params(params, complete=True)
        settings = load_settings()
        _preflight(p, settings, Path("."))
        started = time.perf_counter()
        result = run_stage(name, make_context(p, settings, Path(".")))
        if name == "evaluate":
            _print_result(result)
            typer.echo("Browse the runs: recraft ui   (or: mlflow ui --backend-store-uri sqlite:///mlflow.db)")
        else:
            typer.echo(f"{name}: done in {time.perf_counter() - started:.1f}s")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


def _print_result(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['task']} / {result['method']} / seed {result['seed']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in sorted(k for k in result if k.startswith(("test/", "val/", "bound/"))):
        table.add_row(key, f"{result[key]:.4f}")
    total = sum(v for v in result.get("seconds", {}).values() if v)
    table.add_row("seconds (stages)", f"{total:.0f}")
    Console(file=sys.stdout).print(table)


@app.command()
def tasks(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """List the registered tasks: type, headline metric, modality, shapes and source."""
    from components.tasks import TASKS

    rows = [
        {
            "name": n,
            "type": s.task_type,
            "metric": s.metric,
            "modality": s.modality,
            "shapes": s.shapes,
            "source": s.source,
            "asset": s.asset,
        }
        for n, s in sorted(TASKS.items())
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("task", "type", "metric", "modality", "shapes", caption="sources: recraft tasks --json")
    for r in rows:
        table.add_row(r["name"], r["type"], r["metric"], r["modality"], r["shapes"])
    Console().print(table)
    typer.echo("Your own data: --task npz:PATH or --task pdebench:PATH (see README, 'Your own data').")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def repro(ctx: typer.Context) -> None:
    """``dvc repro [ARGS]`` with one shared local Prefect server (unless PREFECT_API_URL is set)."""
    import os
    import subprocess

    dvc = [str(Path(sys.executable).with_name("dvc")), "repro", *ctx.args]
    try:
        if os.environ.get("PREFECT_API_URL"):
            raise typer.Exit(subprocess.call(dvc))
        from flows.prefect_local import local_prefect_server

        with local_prefect_server(Path(".prefect") / "server.log") as url:
            code = subprocess.call(dvc, env={**os.environ, "PREFECT_API_URL": url})
        raise typer.Exit(code)
    except UserError as exc:
        _fail(exc)


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store."""
    import subprocess

    from flows.settings import load_settings

    settings = load_settings()
    uri = settings.resolved_tracking_uri()
    typer.echo(f"MLflow UI for {uri} on http://127.0.0.1:{port}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    env = {**__import__("os").environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(subprocess.call(cmd, env=env))


if __name__ == "__main__":
    app()
