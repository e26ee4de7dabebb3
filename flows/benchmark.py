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

import csv
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
from prefect import flow

from components.atomic import write_json, write_text
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
from flows.params import apply_overrides, parse_params, task_values
from flows.pipeline import make_context, pipeline, stage_params
from flows.settings import Settings
from flows.tracking import tag_workspace_runs

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
                ctx = make_context(params, settings, root)
                for rel in ("data/assets", "data/prepared"):
                    _link_tree(data_root / rel, root / rel)
                _link_tree(stage0 / "models/source", root / "models/source")
                result = pipeline(ctx, start="tune")  # a finished cell is read back, not rerun
                tags = {"recraft.benchmark": name}
                if method in variants:
                    tags["recraft.variant"] = method
                tag_workspace_runs(settings, root, tags)
                rows.append({**result_row(result), "method": method})
    summary = summarise(rows, {label: m for label, (m, _) in variants.items()})
    write_report(summary, rows, out_dir)
    return summary


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


#: The reference predictors evaluate scores beside ours (components/reference.py).
REFERENCES = ("ridge", "mean")


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


def _fmt(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _sig(x: float) -> str:
    """An error or a difference of errors to 3 significant figures: field errors run from 1e-7
    (a solved linear map) to 1, and a fixed 3 decimals showed the small ones as 0.000."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3g}"


def write_report(summary: dict, rows: list[dict], out_dir: Path) -> None:
    """``runs.csv`` (one row per run), ``table.csv`` and ``table.md`` (per cell), ``summary.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k.startswith("bound/"), k))
    for path, records, header in (
        (out_dir / "runs.csv", rows, keys),
        (
            out_dir / "table.csv",
            [{"cell": k, **v, "ratio_to_nft": summary["ratio_to_nft"].get(k)} for k, v in summary["cells"].items()],
            ["cell", "mean", "std", "n", "ratio_to_nft"],
        ),
    ):
        tmp = path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(records)
        os.replace(tmp, path)
    write_json(out_dir / "summary.json", summary)
    write_text(out_dir / "table.md", markdown(summary))


def markdown(summary: dict) -> str:
    """The results as Markdown: test error mean +- std per task and method, then the summary rows."""
    methods, tasks = summary["methods"], summary["tasks"]
    lines = [
        "Test error (lower is better; 1 - metric for higher-is-better metrics), mean ± std over seeds, "
        "and the ratio to `nft`. Fields and regression also show the linear references fitted on the "
        "same splits (ridge, penalty chosen on validation; the training mean), averaged over seeds.",
        "",
        "| task (metric) | " + " | ".join(methods) + " | " + " | ".join(REFERENCES) + " |",
        "|---|" + "---|" * (len(methods) + len(REFERENCES)),
    ]
    refs = summary.get("references", {})
    for t in tasks:
        row = []
        for m in methods:
            c = summary["cells"].get(f"{t}/{m}")
            ratio = summary["ratio_to_nft"].get(f"{t}/{m}")
            row.append("–" if c is None else f"{_sig(c['mean'])} ± {_sig(c['std'])} ({_fmt(ratio, 2)})")
        row += [_sig(refs[t][n]) if n in refs.get(t, {}) else "–" for n in REFERENCES]
        lines.append(f"| {t} ({summary['metric'][t]}) | " + " | ".join(row) + " |")
    blank = " | –" * len(REFERENCES)
    ranks = " | ".join(_fmt(summary["average_rank"][m], 2) for m in methods)
    lines.append(f"| average rank | {ranks}{blank} |")
    geo = summary["geomean_ratio_to_nft"]
    lines.append("| geo-mean ratio to nft | " + " | ".join(_fmt(geo[m], 3) for m in methods) + f"{blank} |")
    b = summary["bound_spearman"]
    lines += [
        "",
        f"Bound report: Spearman rho between `bound/value` and test error over {b['n']} runs = "
        f"{_fmt(b['rho'])} (p = {_fmt(b['p'])}).",
    ]
    for task in tasks:  # every task, also one without bound values (rho n/a)
        v = b["per_task"].get(task, {"rho": math.nan, "p": math.nan, "n": 0})
        lines.append(f"- {task}: rho = {_fmt(v['rho'])} (p = {_fmt(v['p'])}, {v['n']} runs)")
    wins = summary["recraft_at_least_as_good_share"]
    if wins:
        lines.append("")
        lines.append(
            "Share of tasks where recraft's mean error is <= the other method's: "
            + ", ".join(f"{m} {v:.0%}" for m, v in wins.items())
        )
    lines += _paired_markdown(summary.get("paired", {}))
    if summary.get("ablation"):
        lines += ["", "Ablation: each variant against the method it varies (Holm among the variants)."]
        lines += _paired_markdown(summary["ablation"])
    collapsed = summary.get("collapsed", {})
    if collapsed:
        lines += ["", "Runs that collapsed to a constant test prediction:"]
        lines += [f"- {m}: {c['collapsed']} of {c['runs']}" for m, c in collapsed.items()]
    return "\n".join(lines) + "\n"


def _paired_markdown(paired: dict) -> list[str]:
    """The paired-comparisons table, then one pooled-test line per comparison."""
    if not paired:
        return []
    lines = [
        "",
        "Paired comparisons: per-seed test error of the first method minus the second's "
        "(negative: the first is better), mean with a 95% bootstrap interval.",
        "",
        "| task | comparison | n seeds | mean diff | 95% CI |",
        "|---|---|---|---|---|",
    ]
    for c in paired.values():
        for task, v in c["per_task"].items():
            ci = f"[{_sig(v['low'])}, {_sig(v['high'])}]"
            lines.append(f"| {task} | {c['a']} - {c['b']} | {v['n']} | {_sig(v['mean'])} | {ci} |")
    lines.append("")
    for c in paired.values():
        lines.append(
            f"- {c['a']} vs {c['b']}: pooled over {c['n']} paired runs on {c['tasks']} tasks, "
            f"exact sign-flip p = {_fmt(c['p'])}, Holm-adjusted p = {_fmt(c['p_holm'])}; "
            f"{c['a']}'s mean error <= {c['b']}'s on {c['tasks_a_at_least_as_good']} of {c['tasks']} tasks."
        )
    return lines
