"""The benchmark: methods x tasks x seeds through the same stages, and the table that answers
"does RECRAFT beat ORCA, FA and naive fine-tuning here?" (``recraft bench``).

Each cell is a full pipeline run (its own workspace and MLflow run, tagged with method, task,
seed and the benchmark's name). Stages that do not depend on the method are shared: a task and
seed's assets and prepared splits, and a seed's stage-0 source outputs, are computed once and
hard-linked into every cell (outputs are written atomically, never in place, so links are safe).
Model selection inside each run uses validation data only; the test split is read once, by
each run's evaluate stage.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
from prefect import flow

from components.config import Params
from components.errors import UserError
from components.leaderboard import (
    average_ranks,
    bootstrap_interval,
    cells,
    collapse_counts,
    geometric_mean,
    holm,
    paired_differences,
    ratios_to,
    sign_flip_test,
    spearman,
    to_error,
)
from components.tasks import task_slug
from flows.bench_report import REFERENCES, write_report
from flows.params import apply_overrides, parse_params, task_values
from flows.pipeline import make_context, pipeline, stage_params
from flows.settings import Settings
from flows.stages.context import StageContext
from flows.tracking.runs import tag_workspace_runs

__all__ = ["benchmark", "check_variants", "result_row", "summarise", "write_report"]

BASELINE = "nft"
# The stages whose outputs every cell of a task and seed shares (hard-linked, computed once).
SHARED_STAGES = ("assets", "prepare", "source")
# The paired comparisons the summary tests (first method minus second, per seed); each is made
# when both methods ran. Holm's correction is across the comparisons present.
COMPARISONS: tuple[tuple[str, str], ...] = (("recraft", "nft"), ("recraft", "orca"))


def _link(src: str, dst: str) -> None:
    if not os.path.exists(dst):  # a resumed benchmark already has its links
        os.link(src, dst)


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link every file of ``src`` into ``dst`` (shared, never modified in place)."""
    shutil.copytree(src, dst, copy_function=_link, dirs_exist_ok=True)


def _cell_params(base: dict, task: str, method: str, seed: int, variant: tuple[str, list[str]] | None = None) -> Params:
    """The params of one cell; a variant's cell runs its method with the variant's overrides."""
    raw = json.loads(json.dumps(base))
    raw.update(task=task, seed=seed, use_tuned=False)
    raw = task_values(raw)  # the cell's task's per_task values; a variant's overrides win over them
    if variant is not None:
        method, overrides = variant
        raw = apply_overrides(raw, overrides)
    raw["method"] = method
    return parse_params(raw, source=f"benchmark cell {task}/{method}/{seed}")


@flow(name="benchmark")
def benchmark(
    base: dict,
    tasks: list[str],
    methods: list[str],
    seeds: list[int],
    settings: Settings,
    out_dir: Path,
    name: str = "bench",
    seeds_for: dict[str, int] | None = None,
    variants: dict[str, tuple[str, list[str]]] | None = None,
) -> dict:
    """Run every (task, method, seed) cell; write the results table and the bound report.

    Per seed, stage 0 runs once (``out_dir/shared/seedN``); per task and seed, assets and
    prepare run once (``out_dir/shared/TASK-seedN``); each method's cell links those outputs and
    runs tune (a no-op), align, fit and evaluate in ``out_dir/cells/TASK-seedN/METHOD``.

    Args:
        base: the params every cell starts from (a params file plus the budget's overrides).
        out_dir: where cells, tables and the report go; rerunning resumes finished cells.
        seeds_for: method or variant -> N, to run it on the first N of ``seeds`` only (the cheaper
            baselines and ablations need fewer seeds than the methods compared); others run every seed.
        variants: label -> (method, overrides): an ablation column that runs ``method`` with the
            overrides on top of ``base`` (e.g. ``"fld-only": ("recraft", ["align.lambda_fa=0"])``).
            It is reported beside the methods and compared, paired by seed, with its method.

    Raises:
        UserError: ``seeds_for`` names a method not in ``methods`` or a count below 1; a variant's
            label is a method's name or not a plain name.

    Returns:
        The summary written to ``out_dir/summary.json``.
    """
    seeds_for, variants = seeds_for or {}, variants or {}
    check_variants(variants, methods, base)
    _check_seeds_for(seeds_for, methods + list(variants))
    rows = []
    for i, seed in enumerate(seeds):
        seed_methods = [m for m in methods + list(variants) if m not in seeds_for or i < seeds_for[m]]
        if not seed_methods:  # no cell needs this seed's shared stages
            continue
        stage0 = out_dir / "shared" / f"seed{seed}"
        for task in tasks:
            data_root = out_dir / "shared" / f"{task_slug(task)}-seed{seed}"
            params = _cell_params(base, task, seed_methods[0], seed, variants.get(seed_methods[0]))
            if not (stage0 / "models/source").exists():  # the first task of this seed runs stage 0
                pipeline(make_context(params, settings, stage0), stop="source")
                tag_workspace_runs(settings, stage0, {"recraft.benchmark": name})
            pipeline(make_context(params, settings, data_root), stop="prepare")
            tag_workspace_runs(settings, data_root, {"recraft.benchmark": name})
            for method in seed_methods:
                root = out_dir / "cells" / f"{task_slug(task)}-seed{seed}" / method
                params = _cell_params(base, task, method, seed, variants.get(method))
                tags = {"recraft.benchmark": name} | ({"recraft.variant": method} if method in variants else {})
                result = _run_cell(make_context(params, settings, root), data_root, stage0, tags)
                rows.append({**result_row(result), "method": method})
    summary = summarise(rows, {label: m for label, (m, _) in variants.items()})
    write_report(summary, rows, out_dir)
    return summary


def _run_cell(ctx: StageContext, data_root: Path, stage0: Path, tags: dict[str, str]) -> dict:
    """One cell: link the shared assets, prepared splits and stage-0 outputs into its workspace,
    run tune to evaluate (a finished cell is read back, not rerun) and tag its MLflow runs."""
    root = ctx.layout.root
    for rel in ("data/assets", "data/prepared"):
        _link_tree(data_root / rel, root / rel)
    _link_tree(stage0 / "models/source", root / "models/source")
    result = pipeline(ctx, start="tune")
    tag_workspace_runs(ctx.settings, root, tags)
    return result


def check_variants(variants: dict[str, tuple[str, list[str]]], methods: list[str], base: dict | None = None) -> None:
    """Refuse a variant whose label is not a plain new name, whose method is unknown, whose
    overrides touch what the cells share (the task, seed, data and stage 0) or set the method,
    or (given ``base``, the cells' params) whose overrides do not validate."""
    from components.methods import METHODS, get_method

    shared = {key for stage in SHARED_STAGES for key in stage_params()[stage]} | {"method", "use_tuned"}
    for label, (method, overrides) in variants.items():
        if not label or not all(c.isalnum() or c in "-_" for c in label):
            raise UserError(f"variant label {label!r} is not a plain name (letters, digits, - and _)")
        if label in methods or label in METHODS:
            raise UserError(f"variant label {label!r} is a method's name; pick another label")
        get_method(method)
        if not overrides:
            raise UserError(f"variant {label!r} has no overrides: it would repeat {method!r}")
        for item in overrides:
            key = item.partition("=")[0]
            clash = [k for k in shared if key == k or key.startswith(k + ".") or k.startswith(key + ".")]
            if clash:
                raise UserError(
                    f"variant {label!r}: {item!r} changes {clash[0]!r}, which the cells of a task and seed "
                    "share; a variant may change the stages after them (model, align, fit, tune)"
                )
        if base is not None:
            try:
                _cell_params(base, base["task"], method, int(base["seed"]), (method, overrides))
            except UserError as exc:
                raise UserError(f"variant {label!r}: {exc}") from None


def _check_seeds_for(seeds_for: dict[str, int], methods: list[str]) -> None:
    for method, count in seeds_for.items():
        if method not in methods:
            raise UserError(f"seeds_for names {method!r}, which is not one of the methods ({', '.join(methods)})")
        if count < 1:
            raise UserError(f"seeds_for gives {method!r} {count} seeds; it needs at least 1")


def result_row(result: dict) -> dict:
    from components.metrics import HIGHER_IS_BETTER

    metric = result["metric"]
    higher = HIGHER_IS_BETTER[metric]
    row = {
        "task": result["task"],
        "method": result["method"],
        "seed": result["seed"],
        "metric": metric,
        "test": result[f"test/{metric}"],
        "val": result[f"val/{metric}"],
        "error": to_error(result[f"test/{metric}"], higher),
        "collapsed": float(result.get("test/collapsed", 0.0)),
    }
    row.update({k: v for k, v in result.items() if k.startswith("bound/")})
    for name in REFERENCES:  # the linear references of fields and regression, as errors
        if (value := result.get(f"reference/{name}/{metric}")) is not None:
            row[f"reference/{name}"] = to_error(value, higher)
    return row


def _references(rows: list[dict], tasks: list[str]) -> dict[str, dict[str, float]]:
    """``task -> {reference: mean error}`` over the seeds of a task (a seed's references do not
    depend on the method: they are fitted on that seed's splits)."""
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        for name in REFERENCES:
            key = f"reference/{name}"
            by_seed = {r["seed"]: r[key] for r in rows if r["task"] == task and key in r}
            if by_seed:
                out.setdefault(task, {})[name] = float(np.mean(list(by_seed.values())))
    return out


def summarise(rows: list[dict], variants: dict[str, str] | None = None) -> dict:
    """Mean +- std per cell, average ranks, error ratios against ``nft`` and their geometric mean,
    the Spearman correlation between the bound value and the test error, the paired comparisons
    (:data:`COMPARISONS`) and the collapse counts per method.

    ``variants`` (label -> the method it varies) adds ``ablation``: each variant minus its method,
    paired by seed, Holm-corrected among the variants (apart from the headline comparisons)."""
    table = cells(rows)
    ratios = ratios_to(table, BASELINE)
    methods = sorted({m for _, m in table})
    tasks = sorted({t for t, _ in table})
    geo = {m: geometric_mean(ratios[(t, m)] for t in tasks if (t, m) in ratios) for m in methods}
    bound = [r for r in rows if "bound/value" in r]
    rho, p = spearman([r["bound/value"] for r in bound], [r["error"] for r in bound])
    per_task = {}
    for task in tasks:
        sub = [r for r in bound if r["task"] == task]
        task_rho, task_p = spearman([r["bound/value"] for r in sub], [r["error"] for r in sub])
        per_task[task] = {"rho": task_rho, "p": task_p, "n": len(sub)}
    wins = {}
    for m in methods:
        if m == "recraft" or "recraft" not in methods:
            continue
        shared = [t for t in tasks if (t, "recraft") in table and (t, m) in table]
        wins[m] = sum(table[(t, "recraft")]["mean"] <= table[(t, m)]["mean"] for t in shared) / max(1, len(shared))
    return {
        "tasks": tasks,
        "methods": methods,
        "cells": {f"{t}/{m}": c for (t, m), c in table.items()},
        "metric": {r["task"]: r["metric"] for r in rows},
        "average_rank": average_ranks(table),
        "ratio_to_nft": {f"{t}/{m}": v for (t, m), v in ratios.items()},
        "geomean_ratio_to_nft": geo,
        "recraft_at_least_as_good_share": wins,
        "bound_spearman": {"rho": rho, "p": p, "n": len(bound), "per_task": per_task},
        "paired": _paired(rows, methods, tasks, COMPARISONS),
        "ablation": _paired(rows, methods, tasks, tuple((v, m) for v, m in (variants or {}).items())),
        "collapsed": collapse_counts(rows),
        "references": _references(rows, tasks),
    }


def _paired(rows: list[dict], methods: list[str], tasks: list[str], comparisons: tuple[tuple[str, str], ...]) -> dict:
    """``"A-B" -> {a, b, per_task, n, p, p_holm, tasks, tasks_a_at_least_as_good}`` for each of
    ``comparisons`` whose methods both ran.

    ``per_task[task]`` = ``{n, mean, low, high, diffs}``: the per-seed differences
    ``error(A) - error(B)`` (negative: A is better) and their mean with a 95% bootstrap interval.
    ``p`` is the exact sign-flip p-value over every task's differences pooled, ``p_holm`` the
    same after Holm's correction across the comparisons present, and
    ``tasks_a_at_least_as_good`` the number of tasks whose mean difference is <= 0.
    """
    out = {}
    for a, b in comparisons:
        if a not in methods or b not in methods:
            continue
        per_task, pooled = {}, []
        for task in tasks:
            diffs = paired_differences(rows, a, b, task)
            if not diffs:
                continue
            mean, low, high = bootstrap_interval(diffs)
            per_task[task] = {"n": len(diffs), "mean": mean, "low": low, "high": high, "diffs": diffs}
            pooled += diffs
        out[f"{a}-{b}"] = {
            "a": a,
            "b": b,
            "per_task": per_task,
            "n": len(pooled),
            "p": sign_flip_test(pooled),
            "tasks": len(per_task),
            "tasks_a_at_least_as_good": sum(v["mean"] <= 0 for v in per_task.values()),
        }
    adjusted = holm({k: v["p"] for k, v in out.items()})
    for key, value in out.items():
        value["p_holm"] = adjusted[key]
    return out
