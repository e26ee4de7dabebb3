"""``recraft run --workdir DIR`` killed with SIGKILL mid-fit, then re-run with the same command,
resumes and writes the same metrics JSON (``seconds`` aside) as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

RECRAFT = str(Path(sys.executable).with_name("recraft"))
TINY = [
    "model.n_layers=1",
    "prepare.max_train=96",
    "prepare.max_test=40",
    "source.n_source=64",
    "source.epochs=2",
    "source.hinge_steps=1",
    "align.epochs=2",
    "align.steps_per_epoch=1",
    "align.batch_size=32",
    "fit.epochs=4",
    "fit.min_steps=0",
    "fit.batch_size=16",
]


def _cmd(workdir: Path) -> list[str]:
    sets = [a for kv in TINY for a in ("--set", kv)]
    return [
        RECRAFT,
        "run",
        "--task",
        "motion",
        "--workdir",
        str(workdir),
        "--metrics-out",
        str(workdir / "m.json"),
        *sets,
    ]


def _env(tmp_path: Path, wheel_cache: Path) -> dict:
    env = {
        **os.environ,
        "RECRAFT_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECRAFT_ARTIFACT_LOCATION": (tmp_path / "artifacts").as_uri(),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_DEVICE": "cpu",
        "RECRAFT_CHECKPOINT_EVERY": "1",
        "PREFECT_HOME": str(tmp_path / "prefect"),
    }
    env.pop("PREFECT_API_URL", None)
    return env


def _metrics(path: Path) -> dict:
    result = json.loads(path.read_text())
    result.pop("seconds")
    return result


def test_killed_run_resumes_to_the_same_metrics(tmp_path, wheel_cache):
    env = _env(tmp_path, wheel_cache)
    whole = subprocess.run(_cmd(tmp_path / "whole"), env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    work = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(work), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    state = work / "checkpoints" / "fit" / "state.json"
    deadline = time.monotonic() + 600
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # the run and anything it started
    assert proc.wait() == -signal.SIGKILL
    assert state.exists(), "the run was not killed inside fit"
    assert not (work / "metrics" / "evaluate.json").exists()

    resumed = subprocess.run(_cmd(work), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "align already finished; running fit, evaluate" in resumed.stderr
    assert _metrics(work / "m.json") == _metrics(tmp_path / "whole" / "m.json")
    assert not (work / "checkpoints" / "fit").exists()  # dropped once the model was written
