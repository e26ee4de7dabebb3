"""``recraft``: the command-line entry point. It calls the same flows as ``dvc repro``.

Exit codes: 0 success; 2 bad input (one line on stderr, nothing written); 1 anything else. The
commands live in :mod:`flows.cli.runs` (run, tune, stage, repro), :mod:`flows.cli.bench` and
:mod:`flows.cli.ops` (tasks, serve, ui, lineage, predict, doctor).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from flows.cli import bench, common, ops, runs

__all__ = ["app"]

# No locals in tracebacks: they would print settings and URLs with their passwords.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Cross-modal fine-tuning with RECRAFT.",
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for input errors")] = False) -> None:
    common.state["debug"] = debug
    from flows.settings import configure_prefect

    if not debug:  # a warning is one line for the user, not the source line that raised it
        import warnings

        warnings.formatwarning = common.one_line_warning
    if debug:  # keep Prefect's own report of a failed flow run
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "ERROR")
    configure_prefect()  # before prefect or mlflow are imported: quiet logs, local-mode timeouts


for command in (runs.run, runs.tune, bench.bench, ops.tasks, ops.serve, ops.ui, ops.lineage, ops.predict, ops.doctor):
    app.command()(command)
app.command(hidden=True)(runs.stage)
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(runs.repro)
