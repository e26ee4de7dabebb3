"""`dvc repro` end to end on tiny params: it runs, a second run is a no-op, and changing one
param re-runs only the stages that depend on it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.prefect_local import is_alive
from tests.conftest import PER_PROCESS, tiny_params_yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def repo(tmp_path_factory, wheel_cache):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    for sub in ("components", "flows"):
        shutil.copytree(ROOT / sub, repo / sub, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(tiny_params_yaml(PER_PROCESS))
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(repo),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_DEVICE": "cpu",
        "PREFECT_HOME": str(repo / ".prefect_home"),
        "DVC_NO_ANALYTICS": "1",
        "RECRAFT_LOG_EVERY": "1",  # the tiny fit takes a few steps: one point each
    }
    for variable in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "RECRAFT_TRACKING_URI"):
        env.pop(variable, None)  # the runs land in this workspace's mlflow.db, which the tests read
    _run(["git", "init", "-q"], repo, env)
    _run([str(BIN / "dvc"), "init", "-q"], repo, env)
    return repo, env


def _servers_started(path: Path) -> int:
    log = path / ".prefect" / "server.log"
    return log.read_text().count("Configure Prefect to communicate with the server") if log.exists() else 0


def test_repro_then_noop_then_partial(repo):
    path, env = repo
    # A plain `dvc repro`: its seven stage processes share one Prefect server (flows/prefect_local.py).
    first = _run([str(BIN / "dvc"), "repro"], path, env)
    assert "Running stage 'evaluate'" in first.stdout, first.stdout[-2000:]
    assert (path / "metrics" / "evaluate.json").exists()
    assert _servers_started(path) == 1
    # The pipeline run records the prepared data's hash exactly as dvc.lock has it.
    from flows.lineage import lock_hashes

    assert _parent_tag(path, "recraft.dvc.prepared") == {lock_hashes(path)["data/prepared"]}

    second = _run([str(BIN / "dvc"), "repro"], path, env)
    assert "Running stage" not in second.stdout
    assert "Data and pipelines are up to date" in second.stdout

    # Editing the code of evaluate's bound terms makes evaluate stale, and neither fit nor align.
    bound = path / "components" / "bound.py"
    original = bound.read_text()
    bound.write_text(original + "\n# edited\n")
    status = _run([str(BIN / "dvc"), "status"], path, env).stdout
    bound.write_text(original)
    assert "evaluate:" in status and "fit:" not in status and "align:" not in status, status
    assert "Data and pipelines are up to date" in _run([str(BIN / "dvc"), "status"], path, env).stdout

    params = yaml.safe_load((path / "params.yaml").read_text())
    params["fit"]["lr"] = params["fit"]["lr"] * 2
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = _run([str(BIN / "dvc"), "status"], path, env).stdout
    assert "fit:" in status and "align:" not in status and "source:" not in status
    third = _run([str(BIN / "recraft"), "repro"], path, env)
    ran = {line.split("'")[1] for line in third.stdout.splitlines() if line.startswith("Running stage")}
    # tune reads fit (its search starts from it) but, with use_tuned false, rewrites the same
    # empty params.tuned.yaml in well under a second, so align is not re-run.
    assert ran == {"tune", "fit", "evaluate"}
    # The two pipeline runs: the same prepared data (hash equal), a different model (hash differs),
    # each as dvc.lock had it when the run ended.
    assert len(_parent_tag(path, "recraft.dvc.prepared")) == 1
    models = _parent_tag(path, "recraft.dvc.model")
    assert len(models) == 2 and lock_hashes(path)["models/model"] in models

    shown = _run([str(BIN / "dvc"), "metrics", "show"], path, env).stdout
    assert "test/accuracy" in shown
    # `dvc plots show` draws fit's training loss against the optimiser step, one point per step.
    import json

    plots = json.loads(_run([str(BIN / "dvc"), "plots", "show", "--json"], path, env).stdout)["data"]
    (curve,) = plots["plots/fit_steps.csv"]
    assert curve["content"]["encoding"]["x"]["field"] == "step"
    points = [int(p["step"]) for p in curve["content"]["data"]["values"]]
    assert len(points) >= 2 and points == list(range(1, len(points) + 1)), points


def _parent_tag(path: Path, key: str) -> set[str]:
    import sqlite3

    with sqlite3.connect(path / "mlflow.db") as db:
        return {v for (v,) in db.execute("SELECT value FROM tags WHERE key = ?", (key,))}


def _fit_runs(path: Path) -> int:
    import sqlite3

    with sqlite3.connect(path / "mlflow.db") as db:
        return db.execute("SELECT COUNT(*) FROM runs WHERE name LIKE 'fit%'").fetchone()[0]


def _curve(path: Path) -> list[dict[str, float]]:
    import csv

    with open(path / "plots" / "fit.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_fit_under_torchrun_matches_one_process(repo):
    """`torchrun --nproc-per-node 2 recraft stage fit` (gloo on CPU) trains one model on the same
    global batch: its validation curve matches the single-process fit's within dropout noise,
    and rank 0 alone logs (one more MLflow fit run) and writes the model."""
    path, env = repo
    if not (path / "plots" / "fit.csv").exists():  # run alone, without the test above
        _run([str(BIN / "recraft"), "repro"], path, env)
    single, runs_before = _curve(path), _fit_runs(path)
    (path / "models" / "model" / "weights.safetensors").unlink()
    env = {**env, "OMP_NUM_THREADS": "1"}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", "2", str(BIN / "recraft"), "stage", "fit"]
    proc = _run(cmd, path, env)
    assert proc.stdout.count("fit: done") == 1, proc.stdout[-2000:]  # rank 0 alone reports
    assert (path / "models" / "model" / "weights.safetensors").exists()
    assert _fit_runs(path) == runs_before + 1
    ddp = _curve(path)
    assert len(ddp) == len(single)
    for mine, ref in zip(ddp, single, strict=True):
        # Same data order, same global batch, same initial weights; only the dropout masks differ
        # (tests/model/test_ddp.py checks exact agreement with dropout off). After two steps the
        # validation loss moved by 0.17 with the dropout masks (0.76 vs 0.93, measured), accuracy
        # and training loss by under 0.02.
        assert abs(mine["train_loss"] - ref["train_loss"]) < 0.05, (mine, ref)
        assert abs(mine["val_accuracy"] - ref["val_accuracy"]) < 0.05, (mine, ref)


def test_dvc_experiments_list_their_params_and_test_metrics(repo):
    """`dvc exp run --set-param` twice on a committed workspace; `dvc exp show` lists both
    experiments with the param each set and the test metrics evaluate wrote."""
    import csv
    import io

    path, env = repo
    if not (path / "plots" / "fit.csv").exists():  # run alone, without the tests above
        _run([str(BIN / "recraft"), "repro"], path, env)
    with open(path / ".gitignore", "a") as f:  # the stores and caches a workspace holds
        f.write("/mlflow.db\n/mlflow.db.lock\n/mlartifacts/\n.prefect/\n.prefect_home/\n__pycache__/\n/checkpoints/\n")
    _run(["git", "add", "-A"], path, env)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "baseline"], path, env)
    lrs = {"lr-a": "0.0002", "lr-b": "0.0003"}
    for name, lr in lrs.items():
        _run([str(BIN / "dvc"), "exp", "run", "--name", name, "--set-param", f"fit.lr={lr}"], path, env)
    shown = _run([str(BIN / "dvc"), "exp", "show", "--csv"], path, env).stdout
    rows = {row["Experiment"]: row for row in csv.DictReader(io.StringIO(shown)) if row["Experiment"]}
    assert set(lrs) <= set(rows), shown[:2000]
    lr_column = next(c for c in next(iter(rows.values())) if c.endswith("fit.lr"))
    for name, lr in lrs.items():
        assert float(rows[name][lr_column]) == float(lr)
        assert 0.0 <= float(rows[name]["test/accuracy"]) <= 1.0
    assert rows["lr-a"]["rev"] != rows["lr-b"]["rev"]


def test_ctrl_c_in_a_plain_dvc_repro_leaves_no_prefect_server(repo):
    """Ctrl-C while a stage runs: the stage stops, and the workspace's shared Prefect server stops
    once idle (RECRAFT_PREFECT_IDLE_S, 10 s in the suite), with no process of it left."""
    path, env = repo
    # A stage that is still computing when Ctrl-C lands: the tiny align (2 steps) could finish
    # between its lease and the signal, and dvc would exit 0.
    params_file = path / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["align"]["epochs"] = 500
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        _interrupt_align(path, env)
    finally:
        params_file.write_text(original)


def _interrupt_align(path: Path, env: dict) -> None:
    import json
    import signal
    import time

    from flows.supervise import descendants

    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", "align"],
        cwd=path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, as a terminal's foreground job
        # with Ctrl-C's default action, as a terminal gives it; a suite started in the background
        # of a non-interactive shell would otherwise pass on SIGINT ignored to the whole tree.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    state, leases = path / ".prefect" / "server.json", path / ".prefect" / "leases"

    def stage_leased() -> bool:  # a lease of this repro's stage, not one left by an earlier run
        mine = {str(pid) for pid in descendants(proc.pid)}
        return state.exists() and any(lease.name in mine for lease in leases.glob("*"))

    deadline = time.monotonic() + 300
    while not stage_leased() and time.monotonic() < deadline:
        assert proc.poll() is None, "dvc repro ended before its stage took the server"
        time.sleep(0.2)
    time.sleep(2)  # into the stage's computation
    keeper = json.loads(state.read_text())["pid"]
    server = [keeper, *descendants(keeper)]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the foreground process group
    assert proc.wait(timeout=60) != 0
    deadline = time.monotonic() + 10 + 15
    while (alive := [p for p in server if is_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive, f"Prefect server processes {alive} outlived the interrupted dvc repro"
    assert not state.exists()
