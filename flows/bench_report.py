"""The benchmark's report: ``runs.csv``, ``table.csv``, ``table.md`` and ``summary.json``, and the
Markdown table ``recraft bench`` prints."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

from components.atomic import write_json, write_text

__all__ = ["REFERENCES", "write_report", "markdown"]

# The linear references shown beside the methods (fields and regression).
REFERENCES = ("ridge", "mean")


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
