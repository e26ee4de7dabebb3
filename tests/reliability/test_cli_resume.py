"""``recraft run`` killed with SIGKILL at the worst moments, then re-run with the same command,
ends with the metrics and weights of an uninterrupted run and leaves no temporary entry behind.

The kills are injected by the test-only ``RECRAFT_FAULT`` hook (:mod:`components.faults`) into
one workspace, one after another, so that the whole matrix costs one more pipeline run than the
reference: in align and in fit, the run dies between two checkpoints (a lost step is replayed),
inside a checkpoint save (a half-written state), and between the renames of ``atomic_dir``.
Before them the workspace holds a run on other contents of the same ``npz:`` file: the edited
file must re-run the pipeline from ``assets``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RECRAFT = str(Path(sys.executable).with_name("recraft"))
# Checkpoints every 2 steps; align runs 2 epochs x 3 steps, fit 2 epochs x 4 steps (of ~100
# training samples), so each stage saves several times and has steps between saves.
# TINY with more steps (every fault point is reached) on a smaller body and source.
BUDGET = TINY + [
    "model.n_layers=1",
    "prepare.max_test=40",
    "source.n_source=48",
    "source.epochs=2",
    "align.epochs=2",
    "align.steps_per_epoch=3",
    "fit.epochs=2",
    "fit.batch_size=32",
    "fit.patience=2",
]
# align runs 2 epochs x 3 steps: saves after steps 2, 3, 4, 6, 6; fit 2 epochs x 4 steps: saves
# after steps 2, 4, 4, 6, 8, 8. The kills hit one workspace in turn, each re-run resuming from
# what the last one left (counts are per process): (RECRAFT_FAULT, the temporary entry an
# interrupted atomic_dir leaves in checkpoints/, or None).
KILLS = [
    ("align:save=1", ".align."),  # inside the first save: nothing to resume, align starts over
    ("align:step=3", None),  # between checkpoints (after step 2's): step 3 is replayed
    ("align:atomic_rename=2", ".align."),  # step 4's state swapped in, step 3's not yet removed
    ("fit:step=3", None),  # align resumes from step 4 and finishes; fit dies after step 3
    ("fit:save=2", ".fit."),  # inside the save at the end of epoch 1: a half-written state
    ("fit:atomic_rename=2", ".fit."),  # step 6's state swapped in
]


def _write_task(path: Path, seed: int) -> None:
    """A small binary task (2 channels x 16 steps): the label is the sign of channel 0's mean."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", 128), ("test", 40)):
        x = rng.normal(size=(n, 2, 16)).astype(np.float32)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, (x[:, 0].mean(1) > 0).astype(np.int64)
    np.savez(path, **arrays)


@pytest.fixture(scope="module")
def shared(tmp_path_factory, wheel_cache):
    """One Prefect server and one MLflow store for every run of the module."""
    from flows.prefect_local import local_prefect_server

    base = tmp_path_factory.mktemp("cli_resume")
    with local_prefect_server(base / "prefect-server.log") as url:
        env = {
            **os.environ,
            # MLflow's own variable, as most MLflow users export it: recraft honours it.
            "MLFLOW_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
            "RECRAFT_ARTIFACT_LOCATION": (base / "artifacts").as_uri(),
            "RECRAFT_WHEEL_CACHE": str(wheel_cache),
            "RECRAFT_DEVICE": "cpu",
            "RECRAFT_CHECKPOINT_EVERY": "2",
            "PREFECT_HOME": str(base / "prefect"),
            "PREFECT_API_URL": url,
        }
        for variable in ("RECRAFT_FAULT", "RECRAFT_TRACKING_URI", "RECRAFT_ROOT"):
            env.pop(variable, None)
        yield base, env


def _run(workdir: Path, task: Path, env: dict, fault: str | None = None) -> subprocess.CompletedProcess:
    sets = [a for kv in BUDGET for a in ("--set", kv)]
    cmd = [RECRAFT, "run", "--task", f"npz:{task}", "--workdir", str(workdir), "--metrics-out", str(workdir / "m.json")]
    env = {**env, "RECRAFT_FAULT": fault} if fault else env
    cwd = workdir.parent / "cwd"  # where a default store (./mlflow.db) would appear
    cwd.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        cmd + sets, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=600)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything the run started and left behind
        except ProcessLookupError:
            pass
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(scope="module")
def reference(shared) -> dict:
    """The uninterrupted run on the task file's final contents."""
    base, env = shared
    task = base / "task.npz"
    _write_task(task, seed=1)
    work = base / "reference"
    proc = _run(work, task, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _outcome(work)


def test_with_only_mlflow_tracking_uri_set_the_runs_land_in_that_store_and_nowhere_else(shared, reference):
    """``MLFLOW_TRACKING_URI`` alone (no ``RECRAFT_TRACKING_URI``) names the store of every run."""
    import sqlite3

    base, env = shared
    assert "RECRAFT_TRACKING_URI" not in env
    with sqlite3.connect(base / "mlflow.db") as db:
        names = {row[0] for row in db.execute("SELECT name FROM runs")}
    assert {"assets", "prepare", "source", "align", "fit", "evaluate"} <= {n.split("-")[0] for n in names}, names
    # Nowhere else: not in the default store, ./mlflow.db of the directory the run started in.
    assert list(base.rglob("mlflow.db")) == [base / "mlflow.db"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _outcome(work: Path) -> dict:
    """What must not depend on kills: metrics (``seconds`` aside) and the weights' sha256."""
    metrics = json.loads((work / "m.json").read_text())
    metrics.pop("seconds")
    weights = {d: _sha256(work / "models" / d / "weights.safetensors") for d in ("embedder", "model")}
    return {"metrics": metrics, "weights": weights}


def _leftovers(work: Path) -> list[str]:
    """Temporary entries of atomic writes anywhere in the workspace."""
    return sorted(str(p.relative_to(work)) for p in work.rglob(".*") if p.name.endswith((".tmp", ".old")))


def test_kills_at_every_fault_point_resume_to_the_uninterrupted_result(shared, reference, tmp_path):
    base, env = shared
    task = base / "task.npz"
    work = tmp_path / "work"

    # A run on other contents of the same file finishes assets and prepare ...
    _write_task(task, seed=2)
    first = _run(work, task, env, fault="source:start")
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    # ... then the file is edited in place: everything from assets must run again.
    _write_task(task, seed=1)
    for fault, left in KILLS:
        killed = _run(work, task, env, fault=fault)
        assert killed.returncode == -signal.SIGKILL, (fault, killed.stderr[-3000:])
        assert not (work / "m.json").exists()
        if fault == KILLS[0][0]:
            assert "already finished" not in killed.stderr, killed.stderr[-3000:]
            copied = work / "data" / "assets" / "target" / "data.npz"
            assert _sha256(copied) == _sha256(task), "the edited file was not imported again"
        if left is not None:  # the kill landed inside the save, not before or after it
            assert any(p.name.startswith(left) for p in (work / "checkpoints").iterdir()), fault

    resumed = _run(work, task, env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "align already finished; running fit, evaluate" in resumed.stderr
    assert _outcome(work) == reference
    assert _leftovers(work) == []
    assert not (work / "checkpoints" / "align").exists() and not (work / "checkpoints" / "fit").exists()


def test_a_second_run_on_a_busy_workspace_exits_2_naming_the_lock(shared, tmp_path):
    from components.layout import Layout
    from flows.lock import workspace_lock

    base, env = shared
    task = tmp_path / "task.npz"
    _write_task(task, seed=1)
    work = tmp_path / "work"
    lock = Layout(work).lock_file
    with workspace_lock(lock):  # this test process is the run in progress
        proc = _run(work, task, env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(lock) in errors[0] and f"pid {os.getpid()}" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (work / "data").exists()  # it wrote nothing
