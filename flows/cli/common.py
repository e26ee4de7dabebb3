"""What every ``recraft`` command shares: the one error wrapper, params building and the checks
that run before any output exists, and the tables printed at the end."""

from __future__ import annotations

import functools
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import typer

from components.budgets import BUDGETS, released_overrides
from components.errors import UserError

__all__ = [
    "state",
    "fail",
    "exits_on_error",
    "one_line_warning",
    "build_params",
    "default_workdir",
    "defaults",
    "preflight",
    "print_result",
    "print_metrics",
]

F = TypeVar("F", bound=Callable[..., None])


# Set by the ``--debug`` option (:func:`flows.cli.main`).
state = {"debug": False}


def fail(exc: BaseException) -> None:
    """Turn an exception into the documented exit code; tracebacks only for bugs or --debug.

    Everything printed is passed through :func:`flows.settings.redact`: a store's URL, in a
    message or in a driver's error chained below it, is shown without its password.
    """
    from flows.settings import redact

    if isinstance(exc, UserError):
        if state["debug"]:
            typer.echo(redact("".join(traceback.format_exception(exc))), err=True, nl=False)
        typer.echo(redact(f"error: {exc}"), err=True)
        if exc.hint:
            typer.echo(redact(f"hint: {exc.hint}"), err=True)
        raise typer.Exit(2)
    if isinstance(exc, (typer.Exit, typer.Abort)):  # an exit code already chosen
        raise exc
    typer.echo(redact("".join(traceback.format_exception(exc))), err=True, nl=False)
    raise typer.Exit(1)


def one_line_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
    return f"warning: {message}\n"


def exits_on_error(command: F) -> F:
    """A command's one error wrapper: any exception it raises leaves through :func:`fail` (exit 2
    with one line for a user's mistake, 1 with the traceback for a bug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):  # noqa: ANN202 - typer reads the wrapped command's signature
        try:
            return command(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - fail re-raises anything that is not a UserError
            fail(exc)

    return wrapper  # type: ignore[return-value]


def build_params(task, method, seed, budget: str, set_: list[str] | None, params: Path | None, extra=()):
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
    load = lambda extra: load_params(params, extra) if params is not None else defaults(extra)  # noqa: E731
    if budget == "released":  # the budget depends on the task, which the file or the options name
        return load(released_overrides(load(overrides).task) + overrides)
    return load(overrides)


def default_workdir(p) -> Path:
    from components.tasks import task_slug

    return Path("runs") / f"{task_slug(p.task)}-{p.method}-{p.seed}"


def defaults(overrides: list[str]):
    from flows.params import parse_params, task_values, with_overrides

    return parse_params(task_values(with_overrides({}, overrides)), source="defaults")


def preflight(p, settings, root: Path) -> None:
    """Checks that fail fast, before any output exists: a user's data file and the stores."""
    from components.tasks import get_task
    from components.tasks import preflight as check_user_data
    from flows.tracking.runs import Tracker

    check_user_data(get_task(p.task), p.data)
    if settings.asset_mirror:  # read-only check first: the tracking store may create a database
        from flows.storage import WheelMirror, s3_client

        WheelMirror(settings.asset_mirror, s3_client(settings.s3_endpoint_url, max_attempts=2)).list()
    Tracker(settings, root)  # raises a UserError when the tracking store is unreachable


def print_result(result: dict) -> None:
    rows = {k: f"{result[k]:.4f}" for k in sorted(k for k in result if k.startswith(("test/", "val/", "bound/")))}
    # The linear references (fields and regression) in the task's metric, beside ours.
    metric = result.get("metric")
    rows |= {k: f"{result[k]:.4f}" for k in sorted(result) if k.startswith("reference/") and k.endswith(f"/{metric}")}
    total = sum(v for v in result.get("seconds", {}).values() if v)
    rows["seconds (stages)"] = f"{total:.0f}"
    print_metrics(f"{result['task']} / {result['method']} / seed {result['seed']}", rows)


def print_metrics(title: str, rows: dict[str, str], columns: tuple[str, str] | None = ("metric", "value")) -> None:
    """A two-column table; ``columns=None``: no header, values left-aligned (descriptions, not numbers)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, min_width=len(title), show_header=columns is not None)  # the title on one line
    table.add_column(columns[0] if columns else "")
    table.add_column(columns[1] if columns else "", justify="right" if columns else "left")
    for key, value in rows.items():
        table.add_row(key, value)
    Console(file=sys.stdout).print(table)
