"""Progress bars for the training loops: drawn on a terminal, silent in logs, CI and pipes.

The loops in :mod:`components.training` report each optimiser step through ``on_step``; this
module turns that callback into a rich progress bar on stderr, so stdout stays the command's report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["bars_enabled", "step_progress"]


def bars_enabled() -> bool:
    """Bars only for a person watching: stderr is a terminal and ``CI`` is unset (or false)."""
    in_ci = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
    return sys.stderr.isatty() and not in_ci


@contextmanager
def step_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """An ``on_step(global_step)`` callback that advances a bar of ``total`` optimiser steps.

    ``global_step`` counts from the start of training, so a resumed run's bar starts where the
    checkpoint left off. The bar disappears when the block ends (early stopping may end it short).
    Without a terminal the callback does nothing.
    """
    if not bars_enabled():
        yield lambda step: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda step: bar.update(task, completed=min(step, total))
