"""Run the default pipeline (``recraft repro`` = ``dvc repro``) once per task and tabulate it.

Each task is selected by the one ``task:`` value in ``params.yaml``; every other value stays the
default. The run happens in a fresh clone of the current commit, so the working tree is never
touched. The source stage does not depend on the task, so DVC runs it for the first task only;
each row reports the whole ``dvc repro`` wall time and the stage seconds from the metrics JSON.

    python benchmarks/task_suite.py [--tasks dna,motion] [--out benchmarks/results/task_suite.json]

Writes the JSON (one record per task, plus git SHA, date and machine) and a Markdown table next
to it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _set_task(params: Path, task: str) -> None:
    text = params.read_text()
    new, n = re.subn(r"(?m)^task: .*$", f"task: {task}", text)
    if n != 1:
        raise SystemExit(f"{params}: expected one top-level 'task:' line, found {n}")
    params.write_text(new)


def run_suite(tasks: list[str], clone: Path) -> list[dict]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(clone),  # the clone's code, not the editable install's
        "RECRAFT_DEVICE": os.environ.get("RECRAFT_DEVICE", "cpu"),
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    rows = []
    for task in tasks:
        _set_task(clone / "params.yaml", task)
        started = time.perf_counter()
        proc = subprocess.run([str(BIN / "recraft"), "repro"], cwd=clone, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            rows.append({"task": task, "error": (proc.stdout + proc.stderr)[-2000:], "wall_seconds": wall})
            print(f"{task}: FAILED after {wall:.0f} s", flush=True)
            continue
        result = json.loads((clone / "metrics" / "evaluate.json").read_text())
        ran = [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]
        rows.append({"task": task, "wall_seconds": wall, "stages_run": ran, **result})
        metric = result["metric"]
        print(f"{task}: test/{metric}={result[f'test/{metric}']:.4f} in {wall:.0f} s", flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | type | metric | test | val | wall (s) | fit (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['task']} | | | failed | | {r['wall_seconds']:.0f} | |")
            continue
        m = r["metric"]
        lines.append(
            f"| {r['task']} | {r.get('task_type', '')} | {m} | {r[f'test/{m}']:.3f} | {r[f'val/{m}']:.3f} | "
            f"{r['wall_seconds']:.0f} | {r['seconds'].get('fit', 0):.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from components.tasks import TASKS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "task_suite.json")
    args = parser.parse_args()
    tasks = [t for t in args.tasks.split(",") if t]
    with tempfile.TemporaryDirectory(prefix="recraft-suite-") as tmp:
        clone = Path(tmp) / "repo"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        sha = _git("rev-parse", "HEAD", cwd=clone)  # what ran, even if the repo moves on meanwhile
        rows = run_suite(tasks, clone)
    record = {
        "git_sha": sha,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    args.out.with_suffix(".md").write_text(markdown(rows))
    print(markdown(rows))


if __name__ == "__main__":
    main()
