"""``recraft tasks``, ``serve``, ``ui``, ``lineage``, ``predict`` and ``doctor``: the commands
around the pipeline."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import exits_on_error, print_metrics

__all__ = ["tasks", "serve", "ui", "lineage", "predict", "doctor"]


@exits_on_error
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


@exits_on_error
def serve(
    cron: Annotated[str, typer.Option(help="cron schedule, e.g. '0 3 * * *' (03:00 daily)")] = "0 3 * * *",
    task: Annotated[str, typer.Option(help="registered task")] = "dna",
    method: Annotated[str, typer.Option(help="scratch, nft, fa, orca or recraft")] = "recraft",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. --set fit.epochs=2")] = None,
    push: Annotated[bool, typer.Option(help="dvc push the outputs after each run")] = True,
    remote: Annotated[str | None, typer.Option(help="DVC remote (default: the project's default)")] = None,
    git_remote: Annotated[str | None, typer.Option(help="also push each run's experiment commit here")] = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "recraft-scheduled",
    timezone: Annotated[str, typer.Option(help="time zone of the cron schedule")] = "UTC",
) -> None:
    """Serve the scheduled pipeline from this checkout: dvc pull, dvc exp run, dvc push on a cron schedule.

    Needs a Prefect server (PREFECT_API_URL). Runs until stopped; stopping pauses the schedule.
    """
    # Served runs report to the Prefect UI: their logs belong there (the quiet defaults set by
    # configure_prefect are for interactive commands).
    for logger in ("FLOW_RUNS", "TASK_RUNS"):
        os.environ[f"PREFECT_LOGGING_LOGGERS_PREFECT_{logger}_LEVEL"] = "INFO"
    from flows.deploy import serve as serve_pipeline

    parameters = {"task": task, "method": method, "overrides": set_ or [], "push": push}
    parameters |= {"remote": remote, "git_remote": git_remote}
    serve_pipeline(cron, name=name, timezone=timezone, parameters=parameters)


@exits_on_error
def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
    workers: Annotated[int, typer.Option(help="server processes (one is plenty for one person)")] = 1,
) -> None:
    """Start the MLflow UI on 127.0.0.1 against the project's tracking store."""
    import subprocess

    from flows.settings import load_settings, redact

    settings = load_settings()
    uri = settings.resolved_tracking_uri()
    typer.echo(f"MLflow UI for {redact(uri)} on http://127.0.0.1:{port}  (Ctrl-C to stop)")
    cmd = [sys.executable, "-m", "mlflow", "ui", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    # The store's URL through the environment, not the command line, which `ps` shows to everyone.
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    raise typer.Exit(subprocess.call(cmd, env=env))


@exits_on_error
def lineage(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION in the registry, e.g. recraft-dna@champion")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Which code, data and params made a registered model version, and how to check them out."""
    from flows.settings import load_settings
    from flows.tracking.registry import model_lineage

    info = model_lineage(model, load_settings())
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    tags, params = info["lineage"], info["params"]
    commit = tags["mlflow.source.git.commit"]
    dirty = {"true": " (tracked files differed from it)", "false": " (clean)"}.get(tags["recraft.git.dirty"] or "", "")
    aliases = f" (@{', @'.join(info['aliases'])})" if info["aliases"] else ""
    rows = {
        "version": f"{info['model']} version {info['version']}{aliases}",
        "pipeline run": f"{info['pipeline_run']} {info['pipeline_run_id']} ({info['status']})",
        "workspace": info["workspace"] or "unknown",
        "code": f"git commit {commit}{dirty}" if commit else "not recorded (not a git checkout, or an older run)",
        "params": ", ".join(f"{k}={params[k]}" for k in ("task", "method", "seed") if k in params)
        + f" ({len(params)} in all: --json)",
        "data/prepared": tags["recraft.dvc.prepared"] or "not recorded",
        "models/model": tags["recraft.dvc.model"] or "not recorded",
    }
    rows |= {f"{context} split": f"{d['source']} md5 {d['digest']}" for context, d in info["datasets"].items()}
    print_metrics(f"lineage of {model}", rows, columns=None)
    if commit:
        typer.echo(
            f"to check it out: git checkout {commit} && dvc checkout, then `dvc status` (or compare dvc.lock's "
            "hashes of data/prepared and models/model with the two above)"
        )


@exits_on_error
def predict(
    model: Annotated[str, typer.Option(help="NAME@ALIAS (registry), runs:/RUN_ID/model, or a model directory")],
    input_: Annotated[
        Path, typer.Option("--input", help="raw inputs (.npz): x_test or x; optionally y_test or y, mask_test or mask")
    ],
    output: Annotated[Path, typer.Option(help="predictions (.npz): predictions, scores, metrics/<name>")],
    split: Annotated[str, typer.Option(help="read x_<split> (and y_<split>) when present, else x (and y)")] = "test",
) -> None:
    """Predict for raw inputs, normalised as the training data was; with targets, print the metrics."""
    from flows.predict import predict as predict_file
    from flows.settings import load_settings

    metrics = predict_file(model, input_, output, split, load_settings())
    if metrics:
        print_metrics(f"{model} on {input_}", {k: f"{v:.6f}" for k, v in metrics.items()})
    typer.echo(f"predictions written to {output}")


@exits_on_error
def doctor(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Check the environment, pinned assets and stores (read-only); exit 1 if a required check fails."""
    from flows.doctor import passed, print_table, run_checks, to_json
    from flows.settings import load_settings

    checks = run_checks(load_settings(), Path("."))
    if as_json:
        typer.echo(to_json(checks))
    else:
        print_table(checks)
    raise typer.Exit(0 if passed(checks) else 1)
