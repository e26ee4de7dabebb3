"""How this table was assembled: the 36 cells of an earlier paired run (dna, vowels, peptides x
nft, orca, recraft x seeds 0-3, same code) extended by the remaining cells of

    recraft bench --tasks dna,vowels,peptides,burgers --methods nft,orca,recraft,fa,scratch \
        --seeds 6 --seeds-for fa=3,scratch=3 --budget paired --name paired

in three resumable phases (most informative first), then one merged table. Run from the
repository root with the 36-row runs.csv of the earlier run at ``OLD``; cells go to ``OUT``.
The one command above computes the same cells (CPU, same torch thread count) in one go.
"""

import csv
import sys
from pathlib import Path

sys.argv = ["recraft"]
from components.budgets import BENCH_BUDGETS  # noqa: E402
from flows.bench_report import markdown, write_report  # noqa: E402
from flows.benchmark import benchmark, summarise  # noqa: E402
from flows.params import apply_overrides, load_params  # noqa: E402
from flows.settings import configure_prefect, load_settings  # noqa: E402

OUT = Path("benchmarks/runs/paired6")
OLD = Path("benchmarks/runs/paired/runs.csv")


def _typed(row: dict) -> dict:
    out = {}
    for k, v in row.items():
        if k in ("method", "metric", "task"):
            out[k] = v
        elif k == "seed":
            out[k] = int(v)
        elif v != "":
            out[k] = float(v)
    return out


def main() -> None:
    old = [_typed(r) for r in csv.DictReader(OLD.open())]
    p = load_params(Path("params.yaml"), BENCH_BUDGETS["paired"])
    base = apply_overrides(p.model_dump(mode="json"), [])
    settings = load_settings()
    configure_prefect()
    phases = [
        ("A", ["dna", "vowels", "peptides"], ["nft", "orca", "recraft"], [4, 5]),
        ("B", ["burgers"], ["nft", "orca", "recraft"], [0, 1, 2, 3, 4, 5]),
        ("C", ["dna", "vowels", "peptides", "burgers"], ["fa", "scratch"], [0, 1, 2]),
    ]
    new = []
    for name, tasks, methods, seeds in phases:
        benchmark(base, tasks, methods, seeds, settings, OUT / name, "paired")
        new += [_typed(r) for r in csv.DictReader((OUT / name / "runs.csv").open())]
        rows = old + new
        summary = summarise(rows)
        write_report(summary, rows, OUT / "merged")
        print(f"=== after phase {name}: {len(rows)} rows", flush=True)
        print(markdown(summary), flush=True)


if __name__ == "__main__":
    main()
