"""``recraft bench``: methods x tasks x seeds through the same stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from components.budgets import BENCH_BUDGETS
from components.errors import UserError
from flows.cli import common
from flows.cli.common import defaults, exits_on_error

__all__ = ["bench"]

# The longer option helps (``recraft bench --help``).
_FIRST_SEED = "the first seed (e.g. seeds kept apart from the reported benchmark's, to choose values on)"
_BUDGET = (
    "quick (smoke run: subsets and few steps; methods may not have left the constant-prediction regime), "
    "paired (the budget comparisons are read at) or full (the params file as it is)"
)
_SEEDS_FOR = "fewer seeds for some methods, e.g. fa=3,scratch=3 (the first N seeds; others use --seeds)"
_VARIANT = (
    "an ablation column: LABEL=METHOD:KEY=VALUE[,KEY=VALUE], a method run with overrides on top of every "
    "cell's params, compared with its method paired by seed (repeatable)"
)


@exits_on_error
def bench(
    tasks: Annotated[str, typer.Option(help="comma-separated tasks")] = "dna,vowels",
    methods: Annotated[str, typer.Option(help="comma-separated methods")] = "scratch,nft,fa,orca,recraft",
    seeds: Annotated[int, typer.Option(help="seeds per cell (FIRST..FIRST+N-1)", min=1)] = 3,
    first_seed: Annotated[int, typer.Option(help=_FIRST_SEED, min=0)] = 0,
    budget: Annotated[str, typer.Option(help=_BUDGET)] = "quick",
    seeds_for: Annotated[str | None, typer.Option(help=_SEEDS_FOR)] = None,
    variant: Annotated[list[str] | None, typer.Option(help=_VARIANT)] = None,
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
    from flows.params import load_params, parse_params, read_params_file, with_overrides
    from flows.settings import load_settings

    if budget not in BENCH_BUDGETS:
        raise UserError(f"--budget {budget!r} is not one of {', '.join(BENCH_BUDGETS)}")
    task_list, method_list = _names(tasks, methods)
    variants = _parse_variants(variant)
    counts = _parse_seeds_for(seeds_for, method_list + list(variants), seeds)
    if params is None and Path("params.yaml").exists():
        params = Path("params.yaml")
    overrides = BENCH_BUDGETS[budget] + (set_ or [])
    p = load_params(params, overrides) if params is not None else defaults(overrides)
    # Each cell applies its own task's per_task values: the base holds the sections unresolved.
    raw = read_params_file(params) if params is not None else {}
    base = parse_params(with_overrides(raw, overrides)).model_dump(mode="json")
    from flows.bench_report import markdown
    from flows.benchmark import benchmark, check_variants

    check_variants(variants, method_list, base)
    settings = load_settings()
    out_dir = out or Path("benchmarks") / "runs" / name
    common.preflight(p, settings, out_dir)
    seed_list = list(range(first_seed, first_seed + seeds))
    summary = benchmark(base, task_list, method_list, seed_list, settings, out_dir, name, counts, variants)
    typer.echo(markdown(summary))
    typer.echo(f"tables: {out_dir / 'table.md'}, {out_dir / 'table.csv'}, {out_dir / 'runs.csv'}")


def _names(tasks: str, methods: str) -> tuple[list[str], list[str]]:
    """``--tasks`` and ``--methods`` as lists of registered names; the methods include ``nft``."""
    from components.methods import get_method
    from components.tasks import get_task

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
    return task_list, method_list


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
