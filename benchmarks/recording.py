"""How the benchmarks time their contenders and record what they measured.

Every benchmark runs on a small shared machine (2 cores here), so absolute seconds drift with
whatever else runs. Contenders are therefore timed side by side in one process, interleaved
(one call of each per repetition, the order rotated each time) and summarised by the median of
``k`` repetitions; the figures worth reading are the *ratios* between contenders of one run.

Each result is saved as ``benchmarks/results/NAME.json`` (machine, commit, raw timings) and
``NAME.md`` (the summary printed at the end).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["ROOT", "RESULTS", "arguments", "environment", "parse", "interleaved", "median", "save", "scaling_exponent"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def arguments(doc: str, quick: str, reps: int, quick_reps: int) -> argparse.ArgumentParser:
    """The options every benchmark takes: ``--quick``, ``--reps`` and ``--threads``.

    ``--threads`` matters on a shared machine: when other work oversubscribes the cores, torch's
    OpenMP threads wait on each other at every small kernel, and 2 threads ran this project's
    Sinkhorn steps 10-20x slower than 1 thread here. Ratios between contenders stay comparable
    either way; the thread count is recorded with every result.
    """
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--reps", type=int, default=None, help=f"repetitions (default {reps}; quick {quick_reps})")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    parser.set_defaults(default_reps=(reps, quick_reps))
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse, resolve ``reps`` for the mode, and set the torch thread count."""
    import torch

    args = parser.parse_args()
    full, quick = args.default_reps
    args.reps = args.reps or (quick if args.quick else full)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # child processes
    return args


def environment(cwd: Path = ROOT) -> dict:
    """Commit, date and machine: what every result file starts with."""
    import torch

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()

    return {
        "git_sha": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def interleaved(
    contenders: dict[str, Callable[[], object]], reps: int, few: dict[str, int] | None = None
) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``reps`` calls each, interleaved with rotated order.

    A warm-up call of each (not recorded) absorbs lazy initialisation (imports, allocator).
    Contenders named in ``few`` (the slow ones) run only that many times, in the first
    repetitions, without a warm-up.
    """
    few = few or {}
    names = list(contenders)
    for name in names:
        if name not in few:
            contenders[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            if rep >= few.get(name, reps):
                continue
            started = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def scaling_exponent(sizes: list[float], seconds: list[float]) -> float:
    """Slope of log(seconds) against log(size): 1 is linear, 2 quadratic."""
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def save(name: str, record: dict, markdown: str) -> Path:
    """Write ``results/NAME.json`` and ``results/NAME.md``; print the Markdown; return the JSON path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    path.with_suffix(".md").write_text(markdown)
    print(markdown)
    print(f"raw timings: {path.relative_to(ROOT)}")
    return path
