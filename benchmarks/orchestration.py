"""Orchestration overhead: plain ``dvc repro`` (DVC + Prefect + MLflow) vs the bare component loop.

    .venv/bin/python benchmarks/orchestration.py [--quick]

Both run the same pipeline with the same small but real params (``OVERRIDES``: the MiniLM-L6
body, the DNA task with 1,000 training samples, short stages), from the code of a fresh clone
of HEAD, alternating (dvc, bare, then bare, dvc, ...), ``--reps`` times each:

- ``dvc``: plain ``dvc repro`` in a fresh clone (one process per DVC stage, each with its Prefect
  flow and MLflow child run, sharing the workspace's local Prefect server, which the first stage
  starts), then a no-op ``dvc repro``, a no-op ``recraft repro`` (which starts its own Prefect
  server first), and ``recraft stage tune`` twice: a stage with almost no compute, whose wall
  clock less its in-flow seconds is a stage process's fixed cost (start, imports, checks,
  bookkeeping, exit);
- ``bare``: ``bare_pipeline.py``, the same component calls in one process (no Prefect, MLflow,
  DVC, output files or figures).

The MLflow store and ``PREFECT_HOME`` live in one temp dir for the whole benchmark and are
created by an untimed warm-up, so no timed run pays their one-time database migrations. Also
timed, interleaved: the imports one stage process pays (``flows.stages`` + MLflow), the bare
loop's imports, and a Prefect server start. Read ``dvc / bare`` (target <= 1.25), the stage
fixed cost (target <= 3 s) and the no-op ``dvc repro`` seconds (target <= 2 s); the breakdown
sets the stages' own seconds (metrics/*.json, measured inside each flow) against the bare
phases, and the remainder of each wall time is process start, imports, flow/run bookkeeping,
figures and output hashing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from recording import ROOT, arguments, environment, median, parse, save

from flows.params import apply_overrides

BIN = Path(sys.executable).parent
OVERRIDES = [
    "prepare.max_train=1000",
    "source.n_source=1000",
    "source.epochs=10",
    "align.epochs=2",
    "fit.min_steps=16",
]


def _env(code: Path, home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(code),  # the clone's code, not the editable install's working tree
        "RECRAFT_DEVICE": "cpu",
        "RECRAFT_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "RECRAFT_ARTIFACT_LOCATION": (home / "mlartifacts").as_uri(),
        "PREFECT_HOME": str(home / "prefect"),
        "DVC_NO_ANALYTICS": "1",
        "TRANSFORMERS_VERBOSITY": "error",  # as configure_prefect sets it for the stages
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    return env


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], log: Path) -> float:
    """Wall seconds of a command; its output goes to ``log``; a failure stops the benchmark."""
    started = time.perf_counter()
    with open(log, "a") as out:
        code = subprocess.call(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if code != 0:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd} (exit {code}); see {log}")
    return time.perf_counter() - started


def _clone(dest: Path, source: Path = ROOT) -> Path:
    """A clone of ``source``'s HEAD with ``OVERRIDES`` written into its params.yaml."""
    subprocess.run(["git", "clone", "-q", str(source), str(dest)], check=True)
    params = dest / "params.yaml"
    params.write_text(yaml.safe_dump(apply_overrides(yaml.safe_load(params.read_text()), OVERRIDES), sort_keys=False))
    return dest


def _run_dvc(tmp: Path, rep: int, code: Path, home: Path) -> dict:
    clone = _clone(tmp / f"dvc-{rep}", code)  # every run is the commit ``code`` holds
    env, log = _env(clone, home), tmp / f"dvc-{rep}.log"
    wall = _timed([str(BIN / "dvc"), "repro"], clone, env, log)
    ran = [line.split("'")[1] for line in log.read_text().splitlines() if line.startswith("Running stage")]
    metrics = {s: json.loads((clone / "metrics" / f"{s}.json").read_text()) for s in ran}
    servers = (clone / ".prefect" / "server.log").read_text().count("Configure Prefect to communicate")
    noop_dvc = _timed([str(BIN / "dvc"), "repro"], clone, env, log)
    fixed = []
    for _ in range(2):  # the shared server is still up (it stops 30 s after the last stage)
        seconds = _timed([str(BIN / "recraft"), "stage", "tune"], clone, env, log)
        fixed.append(seconds - json.loads((clone / "metrics" / "tune.json").read_text())["seconds"])
    noop_recraft = _timed([str(BIN / "recraft"), "repro"], clone, env, log)
    result = metrics["evaluate"]
    stages = {s: m["seconds"] for s, m in metrics.items() if isinstance(m.get("seconds"), int | float)}
    stages["evaluate"] = result["seconds"]["evaluate"]
    return {
        "wall_s": wall,
        "noop_dvc_repro_s": noop_dvc,
        "noop_recraft_repro_s": noop_recraft,
        "stage_fixed_s": fixed,
        "prefect_servers_started": servers,
        "stages_s": stages,
        "stages_run": ran,
        "test": {k: v for k, v in result.items() if k.startswith("test/")},
    }


def _run_bare(tmp: Path, rep: int, code: Path, home: Path) -> dict:
    work = tmp / f"bare-{rep}"
    work.mkdir()
    out = work / "phases.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "bare_pipeline.py"), "--params", str(code / "params.yaml")]
    wall = _timed([*cmd, "--workdir", str(work), "--out", str(out)], work, _env(code, home), tmp / f"bare-{rep}.log")
    phases = json.loads(out.read_text())
    return {"wall_s": wall, "stages_s": phases["seconds"], "test": {k: v for k, v in phases.items() if "test/" in k}}


def _server_start(code: Path, env: dict[str, str]) -> float:
    """Seconds until the shared local Prefect server of ``recraft repro`` answers its health check."""
    snippet = (
        "import time, pathlib; t = time.perf_counter(); from flows.prefect_local import local_prefect_server\n"
        "with local_prefect_server(pathlib.Path('server.log')): print(time.perf_counter() - t)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", snippet], cwd=code, env=env, capture_output=True, text=True, check=True
    )
    return float(proc.stdout.strip().splitlines()[-1])


def _overheads(code: Path, home: Path, reps: int) -> dict[str, list[float]]:
    """Imports of one stage process vs the bare loop, and one Prefect server start, interleaved."""
    env = _env(code, home)
    stage_imports = "import flows.stages, flows.tracking, mlflow, flows.cli"
    bare_imports = "import components.training, components.source, components.tasks"
    times: dict[str, list[float]] = {"stage_imports": [], "bare_imports": [], "prefect_server_start": []}
    for _ in range(reps):
        for name, snippet in (("stage_imports", stage_imports), ("bare_imports", bare_imports)):
            times[name].append(_timed([sys.executable, "-c", snippet], code, env, code / "overheads.log"))
        times["prefect_server_start"].append(_server_start(code, env))
    return times


def main() -> None:
    args = parse(arguments(__doc__, "one repetition of each", 2, 1))
    reps = args.reps
    runs: dict[str, list[dict]] = {"dvc": [], "bare": []}
    with tempfile.TemporaryDirectory(prefix="recraft-orch-") as tmp_name:
        tmp = Path(tmp_name)
        home, code = tmp / "home", _clone(tmp / "code")
        home.mkdir()
        env = _env(code, home)
        warm = time.perf_counter()  # one-time: Prefect and MLflow databases, OS file cache
        _server_start(code, env)
        snippet = "from flows.settings import load_settings; from flows.tracking.runs import Tracker; import pathlib\n"
        snippet += "Tracker(load_settings(), pathlib.Path('.'))"
        _timed([sys.executable, "-c", snippet], code, env, tmp / "warmup.log")
        warmup_s = time.perf_counter() - warm
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
        for rep in range(reps):
            for which in ("dvc", "bare") if rep % 2 == 0 else ("bare", "dvc"):
                row = _run_dvc(tmp, rep, code, home) if which == "dvc" else _run_bare(tmp, rep, code, home)
                runs[which].append(row)
                print(f"rep {rep} {which}: {row['wall_s']:.1f} s", flush=True)
        overheads = _overheads(code, home, max(2, reps))
    record = {
        **environment(),
        "ran_sha": sha,
        "overrides": OVERRIDES,
        "child_threads": args.threads or "torch default",
        "warmup_s": warmup_s,
        "runs": runs,
        "overheads_s": overheads,
    }
    save("orchestration", record, _markdown(runs, overheads))


def _markdown(runs: dict[str, list[dict]], overheads: dict[str, list[float]]) -> str:
    dvc, bare = median([r["wall_s"] for r in runs["dvc"]]), median([r["wall_s"] for r in runs["bare"]])
    noop = median([r["noop_dvc_repro_s"] for r in runs["dvc"]])
    noop_recraft = median([r["noop_recraft_repro_s"] for r in runs["dvc"]])
    fixed = median([s for r in runs["dvc"] for s in r["stage_fixed_s"]])
    lines = [
        f"## Orchestration overhead (median of {len(runs['dvc'])} runs each; overrides: {', '.join(OVERRIDES)})",
        "",
        f"- plain `dvc repro` (DVC + Prefect + MLflow): **{dvc:.1f} s**; bare loop: **{bare:.1f} s**; "
        f"ratio dvc / bare = **{dvc / bare:.2f}** (target <= 1.25); Prefect servers started per run: "
        + ", ".join(str(r["prefect_servers_started"]) for r in runs["dvc"]),
        f"- a stage process's fixed cost (`recraft stage tune` wall less its in-flow seconds): "
        f"**{fixed:.1f} s** (target <= 3 s)",
        f"- no-op `dvc repro` right after: **{noop:.1f} s** (target <= 2 s); no-op `recraft repro` "
        f"(starts its own Prefect server first): {noop_recraft:.1f} s",
        "- each run, dvc / bare wall s: "
        + ", ".join(f"{a['wall_s']:.0f} / {b['wall_s']:.0f}" for a, b in zip(runs["dvc"], runs["bare"], strict=True))
        + "; no-op dvc repro s: "
        + ", ".join(f"{r['noop_dvc_repro_s']:.1f}" for r in runs["dvc"]),
        "- test metrics, dvc vs bare (the same computation, so they should agree): "
        + f"{runs['dvc'][0]['test']} vs {runs['bare'][0]['test']}",
        "",
        "| stage | dvc: in-flow s | bare: phase s | dvc / bare |",
        "|---|---|---|---|",
    ]
    stages = runs["dvc"][0]["stages_run"]

    def med(which: str, stage: str) -> float:
        return median([r["stages_s"].get(stage, 0.0) for r in runs[which]])

    for s in stages:
        d, b = med("dvc", s), med("bare", s)
        lines.append(f"| {s} | {d:.1f} | {b:.1f} | {d / b:.2f} |" if b > 0.05 else f"| {s} | {d:.1f} | {b:.2f} | |")
    in_dvc, in_bare = sum(med("dvc", s) for s in stages), sum(med("bare", s) for s in stages)
    lines += [
        f"| sum | {in_dvc:.1f} | {in_bare:.1f} | {in_dvc / in_bare:.2f} |",
        f"| wall - sum (processes, imports, bookkeeping) | {dvc - in_dvc:.1f} | {bare - in_bare:.1f} | |",
        "",
        "Overheads measured on their own (median s): "
        + ", ".join(f"{k} {median(v):.1f}" for k, v in overheads.items())
        + f"; a `dvc repro` starts {len(stages)} stage processes.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
