"""Named budgets: sets of overrides applied before a user's own ``--set`` values.

A budget changes results, so it lives beside the params schema (components/config.py), not in
the command line's code: ``recraft run --budget NAME`` and ``recraft bench --budget NAME`` read
these lists.
"""

from __future__ import annotations

from components.errors import UserError

__all__ = ["BUDGETS", "BENCH_BUDGETS", "released_overrides"]

# ``recraft run`` and ``recraft tune``.
BUDGETS: dict[str, list[str]] = {
    "full": [],
    "quick": ["prepare.max_train=2000", "source.epochs=30", "align.steps_per_epoch=10", "fit.epochs=1"],
    "released": [],  # per task: released_overrides(task)
}


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
