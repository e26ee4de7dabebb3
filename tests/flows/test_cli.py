"""The CLI's contract: exit codes, one-line errors, nothing written on bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()


def test_tasks_json_lists_the_registry():
    result = runner.invoke(app, ["tasks", "--json"])
    assert result.exit_code == 0
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    from components.tasks import TASKS

    assert set(rows) == set(TASKS)
    assert rows["dna"] | {"source": ""} == {
        "name": "dna",
        "type": "binary",
        "metric": "accuracy",
        "modality": "DNA",
        "shapes": "4 x 200 -> 2 classes",
        "source": "",
        "asset": "janggu-dna",
    }
    assert rows["darcy"]["type"] == "field" and rows["vowels"]["shapes"].startswith("12 x 7..29")


def _recraft(args, cwd: Path):
    env = {**os.environ, "RECRAFT_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_bad_param_exits_2_with_one_line_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text("task: dna\nalign:\n  lambda_fa: -1\n")
    proc = _recraft(["run", "--workdir", "w", "--metrics-out", "m.json"], tmp_path)
    assert proc.returncode == 2
    assert "align.lambda_fa" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[0].startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_unknown_task_and_budget_exit_2(tmp_path):
    (tmp_path / "params.yaml").write_text("task: dna\n")
    proc = _recraft(["run", "--task", "nope", "--workdir", "w"], tmp_path)
    assert proc.returncode == 2 and "unknown task 'nope'" in proc.stderr and "dna" in proc.stderr
    proc = _recraft(["run", "--budget", "huge", "--workdir", "w"], tmp_path)
    assert proc.returncode == 2 and "--budget 'huge'" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_debug_flag_shows_the_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text("seed: -4\n")
    proc = _recraft(["--debug", "run", "--workdir", "w"], tmp_path)
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "seed" in proc.stderr


def test_the_released_budget_takes_each_tasks_released_epochs(tmp_path, monkeypatch):
    """``--budget released``: the released code's stage-2 epochs for the task the options or the
    params file name, all run; ``--set`` still wins; a task without a released config is refused
    in one line, before anything is written."""
    from flows.cli.common import build_params as _build_params

    monkeypatch.chdir(tmp_path)
    darcy = _build_params("darcy", None, None, "released", ["fit.patience=5"], None)
    assert (darcy.fit.epochs, darcy.fit.patience) == (100, 5)
    assert darcy.align.epochs * darcy.align.steps_per_epoch == 60
    (tmp_path / "params.yaml").write_text("task: advection\n")
    assert _build_params(None, None, None, "released", None, None).fit.epochs == 200
    result = runner.invoke(app, ["run", "--task", "tecator", "--budget", "released", "--workdir", "w"])
    assert result.exit_code == 2 and "task 'tecator' has no configuration" in result.output
    assert "dna, ecg, darcy" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
