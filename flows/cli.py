"""``recraft``: the command-line entry point. It calls the same flows as ``dvc repro``.

Exit codes: 0 success; 2 bad input (one line on stderr, nothing written); 1 anything else.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Annotated

import typer

from components.errors import UserError

# No locals in tracebacks: they would print settings and URLs with their passwords.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cross-modal fine-tuning with RECRAFT.",
    pretty_exceptions_show_locals=False,
)

# Budgets are named sets of overrides, applied before the user's own --set values.
BUDGETS: dict[str, list[str]] = {
    "full": [],
    "quick": ["prepare.max_train=2000", "source.epochs=30", "align.steps_per_epoch=10", "fit.epochs=1"],
    "released": [],  # per task: released_overrides(task)
}


def released_overrides(task: str) -> list[str]:
    """``--budget released``: the released RECRAFT code's budget for ``task``'s counterpart: 60
    stage-1 steps, and its stage-2 epochs (``TaskSpec.released_epochs``), all of them run (the
    model kept is still the best on validation). Meant for a GPU: on 2 CPU cores a 200-epoch field
    run takes hours."""
    from components.tasks import TASKS, get_task

    epochs = get_task(task).released_epochs
    if epochs is None:
        having = ", ".join(name for name, spec in TASKS.items() if spec.released_epochs)
        raise UserError(
            f"--budget released: task {task!r} has no configuration in the released RECRAFT code",
            hint=f"the tasks that have one: {having}; elsewhere set the epochs, e.g. --set fit.epochs=100",
        )
    return ["align.epochs=6", "align.steps_per_epoch=10", f"fit.epochs={epochs}", f"fit.patience={epochs}"]


_state = {"debug": False}


def _fail(exc: BaseException) -> None:
    """Turn an exception into the documented exit code; tracebacks only for bugs or --debug.

    Everything printed is passed through :func:`flows.settings.redact`: a store's URL, in a
    message or in a driver's error chained below it, is shown without its password.
    """
    from flows.settings import redact

    if isinstance(exc, UserError):
        if _state["debug"]:
            typer.echo(redact("".join(traceback.format_exception(exc))), err=True, nl=False)
        typer.echo(redact(f"error: {exc}"), err=True)
        if exc.hint:
            typer.echo(redact(f"hint: {exc.hint}"), err=True)
        raise typer.Exit(2)
    if isinstance(exc, (typer.Exit, typer.Abort)):  # an exit code already chosen
        raise exc
    typer.echo(redact("".join(traceback.format_exception(exc))), err=True, nl=False)
    raise typer.Exit(1)


def _one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for input errors")] = False) -> None:
    _state["debug"] = debug
    from flows.settings import configure_prefect

    if not debug:  # a warning is one line for the user, not the source line that raised it
        import warnings

        warnings.formatwarning = _one_line_warning
    if debug:  # keep Prefect's own report of a failed flow run
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "ERROR")
    configure_prefect()  # before prefect or mlflow are imported: quiet logs, local-mode timeouts


@app.command()
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
    try:
        from flows.settings import load_settings

        p = _build_params(task, method, seed, budget, set_, params)
        settings = load_settings()
        root = workdir or _default_workdir(p)
        _preflight(p, settings, root)
        result = _run_pipeline(p, settings, root)
        if metrics_out is not None:
            from components.atomic import write_json

            write_json(metrics_out, result)
        _print_result(result)
    except Exception as exc:  # noqa: BLE001 - _fail re-raises anything that is not a UserError
        _fail(exc)


def _build_params(task, method, seed, budget: str, set_: list[str] | None, params: Path | None, extra=()):
    """Params from the file (or the defaults), the budget, the named options, then ``--set``."""
    from flows.params import load_params

    if budget not in BUDGETS:
        raise UserError(f"--budget {budget!r} is not one of {', '.join(BUDGETS)}")
    overrides = list(BUDGETS[budget])
    named = (("task", task), ("method", method), ("seed", seed), *extra)
    overrides += [f"{k}={v}" for k, v in named if v is not None]
    overrides += set_ or []
    if params is None and Path("params.yaml").exists():
        params = Path("params.yaml")
    load = lambda extra: load_params(params, extra) if params is not None else _defaults(extra)  # noqa: E731
    if budget == "released":  # the budget depends on the task, which the file or the options name
        return load(released_overrides(load(overrides).task) + overrides)
    return load(overrides)


def _default_workdir(p) -> Path:
    from components.tasks import task_slug

    return Path("runs") / f"{task_slug(p.task)}-{p.method}-{p.seed}"


@app.command()
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
    try:
        from flows.settings import configure_prefect, load_settings

        extra = (("tune.n_trials", trials), ("tune.n_workers", workers), ("tune.target", target))
        p = _build_params(task, method, seed, budget, set_, params, extra)
        # --storage through the settings, not a flow parameter: Prefect stores those, passwords too.
        settings = load_settings(**({"optuna_storage": storage} if storage else {}))
        root = workdir or _default_workdir(p)
        _preflight(p, settings, root)
        configure_prefect()
        from flows.pipeline import make_context, pipeline
        from flows.stages import tune as tune_stage

        ctx = make_context(p, settings, root)
        pipeline(ctx, stop="source")
        summary = tune_stage.tune(ctx, search=True)
        _print_tune(summary, root)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


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
    from flows.params import parse_params, task_values, with_overrides

    return parse_params(task_values(with_overrides({}, overrides)), source="defaults")


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
    name: Annotated[str, typer.Argument(help="assets, prepare, source, tune, align, fit or evaluate")],
    params: Annotated[Path, typer.Option(help="params file")] = Path("params.yaml"),
) -> None:
    """Run one stage in the current directory (this is what dvc.yaml calls).

    Without ``PREFECT_API_URL`` the stage runs against the workspace's shared local Prefect server
    (started by the first stage, stopped when idle: flows/prefect_local.py), so a plain
    ``dvc repro`` starts one server, not one per stage.
    """
    from contextlib import ExitStack

    try:
        with ExitStack() as stack:
            server = None
            if not os.environ.get("PREFECT_API_URL"):  # the lease first: it keeps a running server up
                from flows.prefect_local import workspace_prefect_server

                server = stack.enter_context(workspace_prefect_server(Path(".")))
            from components.layout import ORDER
            from flows.params import load_params
            from flows.settings import configure_prefect, load_settings

            if name not in ORDER:
                raise UserError(f"unknown stage {name!r}; stages: {', '.join(ORDER)}")
            p = load_params(params, complete=True)
            settings = load_settings()
            _preflight(p, settings, Path("."))
            if server is not None:  # read when prefect is imported, just below
                os.environ["PREFECT_API_URL"] = server.url()
            configure_prefect()
            from flows.pipeline import make_context, run_stage

            started = time.perf_counter()
            result = run_stage(name, make_context(p, settings, Path(".")))
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    if name == "evaluate":
        _print_result(result)
        typer.echo("Browse the runs: recraft ui   (or: mlflow ui --backend-store-uri sqlite:///mlflow.db)")
    elif os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 alone reports
        typer.echo(f"{name}: done in {time.perf_counter() - started:.1f}s")


def _print_result(result: dict) -> None:
    rows = {k: f"{result[k]:.4f}" for k in sorted(k for k in result if k.startswith(("test/", "val/", "bound/")))}
    # The linear references (fields and regression) in the task's metric, beside ours.
    metric = result.get("metric")
    rows |= {k: f"{result[k]:.4f}" for k in sorted(result) if k.startswith("reference/") and k.endswith(f"/{metric}")}
    total = sum(v for v in result.get("seconds", {}).values() if v)
    rows["seconds (stages)"] = f"{total:.0f}"
    _print_metrics(f"{result['task']} / {result['method']} / seed {result['seed']}", rows)


def _print_metrics(title: str, rows: dict[str, str], columns: tuple[str, str] | None = ("metric", "value")) -> None:
    """A two-column table; ``columns=None``: no header, values left-aligned (descriptions, not numbers)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, min_width=len(title), show_header=columns is not None)  # the title on one line
    table.add_column(columns[0] if columns else "")
    table.add_column(columns[1] if columns else "", justify="right" if columns else "left")
    for key, value in rows.items():
        table.add_row(key, value)
    Console(file=sys.stdout).print(table)


# The benchmark's budgets. "full" is the params file as it is (run it unattended).
BENCH_BUDGETS: dict[str, list[str]] = {
    "full": [],
    # quick: a smoke run; two tasks x five methods x three seeds in about half an hour on 2 CPU
    # cores. Methods may not have left the constant-prediction regime: no comparison is read from it.
    "quick": [
        "prepare.max_train=640",
        "source.n_source=2000",
        "source.epochs=20",
        "align.epochs=2",
        "align.steps_per_epoch=6",
        "fit.epochs=1",
        "fit.min_steps=30",
    ],
    # paired: the budget of the README's benchmark table: 1,000 training samples, 30 stage-1 steps,
    # at least 60 fitting steps (past the constant-prediction regime of the quick budget).
    "paired": [
        "prepare.max_train=1000",
        "source.n_source=2000",
        "source.epochs=30",
        "align.epochs=3",
        "fit.epochs=2",
        "fit.min_steps=60",
    ],
}


def _parse_seeds_for(text: str | None, methods: list[str], seeds: int) -> dict[str, int]:
    """``"fa=3,scratch=3"`` -> ``{"fa": 3, "scratch": 3}``, each a method of the run with 1..seeds seeds."""
    out: dict[str, int] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        method, sep, count = (part.strip() for part in item.partition("="))
        if not sep or not method:
            raise UserError(f"--seeds-for {item.strip()!r} is not METHOD=N (e.g. --seeds-for fa=3,scratch=3)")
        if method not in methods:
            raise UserError(f"--seeds-for {method!r} is not one of --methods ({', '.join(methods)})")
        if method in out:
            raise UserError(f"--seeds-for names {method!r} twice")
        try:
            n = int(count)
        except ValueError:
            raise UserError(f"--seeds-for {method}={count!r}: the count is not a whole number") from None
        if not 1 <= n <= seeds:
            raise UserError(f"--seeds-for {method}={n}: the count must be between 1 and --seeds ({seeds})")
        out[method] = n
    return out


def _parse_variants(items: list[str] | None) -> dict[str, tuple[str, list[str]]]:
    """``["fld-only=recraft:align.lambda_fa=0,fit.lr=1e-4"]`` -> ``{"fld-only": ("recraft", [...])}``.

    Overrides are split at commas; a piece without ``=`` continues the previous value (a list).
    """
    out: dict[str, tuple[str, list[str]]] = {}
    for item in items or []:
        label, sep, rest = (part.strip() for part in item.partition("="))
        method, colon, spec = (part.strip() for part in rest.partition(":"))
        if not sep or not label or not colon or not method or not spec:
            raise UserError(
                f"--variant {item!r} is not LABEL=METHOD:KEY=VALUE[,KEY=VALUE] "
                "(e.g. --variant fld-only=recraft:align.lambda_fa=0)"
            )
        if label in out:
            raise UserError(f"--variant names {label!r} twice")
        overrides: list[str] = []
        for piece in spec.split(","):
            if "=" in piece or not overrides:
                overrides.append(piece.strip())
            else:
                overrides[-1] += "," + piece
        out[label] = (method, overrides)
    return out


@app.command()
def bench(
    tasks: Annotated[str, typer.Option(help="comma-separated tasks")] = "dna,vowels",
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "scratch,nft,fa,orca,recraft",
    seeds: Annotated[int, typer.Option(help="seeds per cell (FIRST..FIRST+N-1)", min=1)] = 3,
    first_seed: Annotated[
        int,
        typer.Option(
            help="the first seed (e.g. seeds kept apart from the reported benchmark's, to choose values on)", min=0
        ),
    ] = 0,
    budget: Annotated[
        str,
        typer.Option(
            help="quick (smoke run: subsets and few steps; methods may not have left the constant-prediction "
            "regime), paired (the budget comparisons are read at) or full (the params file as it is)"
        ),
    ] = "quick",
    seeds_for: Annotated[
        str | None,
        typer.Option(help="fewer seeds for some methods, e.g. fa=3,scratch=3 (the first N seeds; others use --seeds)"),
    ] = None,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="an ablation column: LABEL=METHOD:KEY=VALUE[,KEY=VALUE], a method run with overrides on top "
            "of every cell's params, compared with its method paired by seed (repeatable)"
        ),
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override for every cell")] = None,
    params: Annotated[Path | None, typer.Option(help="params file every cell starts from")] = None,
    out: Annotated[Path | None, typer.Option(help="output directory (default benchmarks/runs/NAME)")] = None,
    name: Annotated[str, typer.Option(help="benchmark name (MLflow tag recraft.benchmark)")] = "bench",
) -> None:
    """Methods x tasks x seeds through the same stages; writes the results table, the paired
    comparisons and the bound report.

    Each cell is a pipeline run tagged with method, task, seed and the benchmark's name.
    Rerunning with the same output directory resumes: finished cells are read back.
    """
    try:
        from components.methods import get_method
        from components.tasks import get_task
        from flows.params import load_params, parse_params, read_params_file, with_overrides
        from flows.settings import configure_prefect, load_settings

        if budget not in BENCH_BUDGETS:
            raise UserError(f"--budget {budget!r} is not one of {', '.join(BENCH_BUDGETS)}")
        task_list = [t.strip() for t in tasks.split(",") if t.strip()]
        method_list = [m.strip() for m in methods.split(",") if m.strip()]
        if not task_list or not method_list:
            raise UserError("--tasks and --methods need at least one name each")
        for t in task_list:
            get_task(t)
        for m in method_list:
            get_method(m)
        if "nft" not in method_list:
            raise UserError("--methods must include nft: the table reports every method's error ratio to it")
        variants = _parse_variants(variant)
        counts = _parse_seeds_for(seeds_for, method_list + list(variants), seeds)
        if params is None and Path("params.yaml").exists():
            params = Path("params.yaml")
        overrides = BENCH_BUDGETS[budget] + (set_ or [])
        p = load_params(params, overrides) if params is not None else _defaults(overrides)
        # Each cell applies its own task's per_task values: the base holds the sections unresolved.
        raw = read_params_file(params) if params is not None else {}
        base = parse_params(with_overrides(raw, overrides)).model_dump(mode="json")
        from flows.benchmark import check_variants

        check_variants(variants, method_list, base)
        settings = load_settings()
        out_dir = out or Path("benchmarks") / "runs" / name
        _preflight(p, settings, out_dir)
        configure_prefect()
        from flows.benchmark import benchmark, markdown

        summary = benchmark(
            base,
            task_list,
            method_list,
            list(range(first_seed, first_seed + seeds)),
            settings,
            out_dir,
            name,
            counts,
            variants,
        )
        typer.echo(markdown(summary))
        typer.echo(f"tables: {out_dir / 'table.md'}, {out_dir / 'table.csv'}, {out_dir / 'runs.csv'}")
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


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
    try:
        from flows.deploy import serve as serve_pipeline

        parameters = {"task": task, "method": method, "overrides": set_ or [], "push": push}
        parameters |= {"remote": remote, "git_remote": git_remote}
        serve_pipeline(cron, name=name, timezone=timezone, parameters=parameters)
    except Exception as exc:  # noqa: BLE001
        _fail(exc)


@app.command()
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


@app.command()
def lineage(
    model: Annotated[str, typer.Argument(help="NAME@ALIAS or NAME/VERSION in the registry, e.g. recraft-dna@champion")],
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Which code, data and params made a registered model version, and how to check them out."""
    try:
        from flows.settings import load_settings
        from flows.tracking import model_lineage

        info = model_lineage(model, load_settings())
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
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
    _print_metrics(f"lineage of {model}", rows, columns=None)
    if commit:
        typer.echo(
            f"to check it out: git checkout {commit} && dvc checkout, then `dvc status` (or compare dvc.lock's "
            "hashes of data/prepared and models/model with the two above)"
        )


@app.command()
def predict(
    model: Annotated[str, typer.Option(help="NAME@ALIAS (registry), runs:/RUN_ID/model, or a model directory")],
    input_: Annotated[
        Path, typer.Option("--input", help="raw inputs (.npz): x_test or x; optionally y_test or y, mask_test or mask")
    ],
    output: Annotated[Path, typer.Option(help="predictions (.npz): predictions, scores, metrics/<name>")],
    split: Annotated[str, typer.Option(help="read x_<split> (and y_<split>) when present, else x (and y)")] = "test",
) -> None:
    """Predict for raw inputs, normalised as the training data was; with targets, print the metrics."""
    try:
        from flows.predict import predict as predict_file
        from flows.settings import load_settings

        metrics = predict_file(model, input_, output, split, load_settings())
    except Exception as exc:  # noqa: BLE001
        _fail(exc)
    if metrics:
        _print_metrics(f"{model} on {input_}", {k: f"{v:.6f}" for k, v in metrics.items()})
    typer.echo(f"predictions written to {output}")


@app.command()
def doctor(as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False) -> None:
    """Check the environment, pinned assets and stores (read-only); exit 1 if a required check fails."""
    from flows.doctor import passed, print_table, run_checks, to_json
    from flows.settings import load_settings

    try:
        checks = run_checks(load_settings(), Path("."))
    except Exception as exc:  # noqa: BLE001 - bad settings (a UserError) exit 2
        _fail(exc)
    if as_json:
        typer.echo(to_json(checks))
    else:
        print_table(checks)
    raise typer.Exit(0 if passed(checks) else 1)


if __name__ == "__main__":
    app()
