"""Passwords in store URLs never leave the process: not in output, errors, tracebacks, MLflow params
or tags, Prefect flow-run parameters, the scheduled flow's logs, nor files in a workspace.

docs/settings.md recommends ``postgresql+psycopg2://user:password@host/db`` for MLflow and Optuna;
every test here sets such URLs with the password ``S3CRET`` and looks for it everywhere it could
go. Stores that cannot be reached are on free loopback ports (refused at once), with MLflow's
engine retries cut to one try, so each test takes seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.prefect_local import _free_port
from flows.settings import Settings, load_settings, redact

pytestmark = pytest.mark.reliability

SECRET = "S3CRET"
runner = CliRunner()


def _pg(db: str, port: int) -> str:
    return f"postgresql+psycopg2://user:{SECRET}@127.0.0.1:{port}/{db}"


def _files_holding_the_secret(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


@pytest.fixture
def one_try(monkeypatch):
    """MLflow retries a SQL store's first connection 10 times over ~100 s; once is enough here."""
    import mlflow.store.db.utils

    monkeypatch.setattr(mlflow.store.db.utils, "MAX_RETRY_COUNT", 1)


@pytest.fixture
def stores(tmp_path, monkeypatch) -> dict[str, str]:
    """The environment of a team setup whose stores are down: MLflow and Optuna on PostgreSQL
    URLs carrying the password; the current directory is an empty ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return {
        "RECRAFT_TRACKING_URI": _pg("mlflow", _free_port()),
        "RECRAFT_OPTUNA_STORAGE": _pg("optuna", _free_port()),
        "RECRAFT_ARTIFACT_LOCATION": (tmp_path / "artifacts").as_uri(),
        "RECRAFT_WHEEL_CACHE": str(tmp_path / "wheels"),
        "RECRAFT_ROOT": str(tmp_path),
        "RECRAFT_DEVICE": "cpu",
        "RECRAFT_ASSET_MIRROR": "",
        "PREFECT_API_URL": "",
    }


# ---------------------------------------------------------------- the redaction itself


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql+psycopg2://user:S3CRET@db.internal/mlflow", "postgresql+psycopg2://user:***@db.internal/mlflow"),
        ("redis://:S3CRET@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://u:p/S3CRET:x@h/db", "postgresql://u:***@h/db"),  # unescaped, as SQLAlchemy reads it
        ("postgresql://h/db?user=u&password=S3CRET", "postgresql://h/db?user=u&password=***"),
        ("connect failed: host=h password=S3CRET user=u", "connect failed: host=h password=*** user=u"),
        (
            "error: cannot reach http://a:S3CRET@h:5000/api (refused); also 'ftp://b:S3CRET@f/x'",
            "error: cannot reach http://a:***@h:5000/api (refused); also 'ftp://b:***@f/x'",
        ),
    ],
)
def test_redact_masks_every_password_in_a_text(text, shown):
    assert redact(text) == shown


@pytest.mark.parametrize(
    "text",
    [
        "http://mlflow.internal:5000",
        "sqlite:////tmp/mlflow.db",
        "postgresql+psycopg2://user@db/mlflow",
        "mlflow-artifacts:/recraft",
        "s3://bucket/prefix",
        "mail alice@example.com",
        "line one\nline two",
    ],
)
def test_redact_leaves_texts_without_a_password_alone(text):
    assert redact(text) == text


def test_settings_mask_passwords_in_repr_and_dumps_but_hand_them_to_workers():
    settings = load_settings(tracking_uri=_pg("mlflow", 5432), optuna_storage=_pg("optuna", 5432))
    assert SECRET not in repr(settings) and "user:***@" in repr(settings)
    assert SECRET not in settings.model_dump_json() and SECRET not in str(settings.model_dump())
    # The one dump that keeps them: the settings of recraft tune's worker processes.
    kept = settings.model_dump_json(context={"include_secrets": True})
    assert Settings.model_validate_json(kept) == settings


# ---------------------------------------------------------------- commands


def test_run_with_an_unreachable_store_fails_in_one_line_without_the_password(stores, tmp_path, one_try):
    for debug in ([], ["--debug"]):
        res = runner.invoke(app, [*debug, "run", "--task", "dna", "--budget", "quick"], env=stores)
        assert res.exit_code == 2, (res.output, res.exception)
        assert SECRET not in res.stdout + res.stderr
        if debug:
            assert "Traceback" in res.stderr and "OperationalError" in res.stderr  # the cause, masked
            continue
        lines = res.stderr.strip().splitlines()
        assert [line.split(":")[0] for line in lines] == ["error", "hint"], lines
        assert lines[0].startswith(
            f"error: cannot reach the MLflow tracking store {redact(stores['RECRAFT_TRACKING_URI'])}"
        )
        assert "user:***@127.0.0.1" in lines[0] and "Connection refused" in lines[0]
    assert _files_holding_the_secret(tmp_path) == []


def test_a_bugs_traceback_is_masked_and_shows_no_locals(stores, monkeypatch):
    import flows.cli.common

    def broken(p, settings, root):
        raise RuntimeError(f"driver said: could not use {settings.tracking_uri}")

    monkeypatch.setattr(flows.cli.common, "preflight", broken)
    res = runner.invoke(app, ["run", "--task", "dna"], env=stores)
    assert res.exit_code == 1
    assert "Traceback" in res.stderr and "driver said: could not use postgresql+psycopg2://user:***@" in res.stderr
    assert SECRET not in res.stdout + res.stderr


def test_doctor_json_masks_the_password_of_every_store(stores, tmp_path, one_try):
    stores["PREFECT_API_URL"] = f"http://admin:{SECRET}@127.0.0.1:{_free_port()}/api"
    res = runner.invoke(app, ["doctor", "--json"], env=stores)
    assert res.exit_code == 1, res.output
    assert SECRET not in res.stdout + res.stderr
    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    for name in ("tracking store", "optuna storage", "prefect api"):
        assert rows[name]["status"] == "fail" and ":***@127.0.0.1" in rows[name]["detail"], rows[name]
    assert _files_holding_the_secret(tmp_path) == []


def test_ui_shows_the_store_masked_and_keeps_it_off_the_command_line(stores, monkeypatch):
    import subprocess

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    res = runner.invoke(app, ["ui", "--port", "5999"], env=stores)
    assert res.exit_code == 0, res.output
    assert SECRET not in res.stdout + res.stderr and "user:***@127.0.0.1" in res.stdout
    ((cmd, env),) = calls
    assert SECRET not in " ".join(cmd)  # `ps` shows a command line to every user of the machine
    assert env["MLFLOW_BACKEND_STORE_URI"] == stores["RECRAFT_TRACKING_URI"]  # the UI still gets it


def test_tune_storage_reaches_the_study_but_not_prefects_flow_parameters(stores, tmp_path, monkeypatch):
    """Prefect stores a flow run's parameters on its server (or in PREFECT_HOME's database)."""
    import flows.cli.common
    import flows.pipeline
    import flows.stages.tune

    flow = flows.stages.tune.tune
    seen = {}

    def fake_tune_stage(ctx, **kwargs):
        seen["parameters"] = flow.serialize_parameters({"ctx": ctx, **kwargs})
        seen["storage"] = ctx.settings.optuna_storage
        return {"study": "s", "direction": "minimize", "target": "val", "trials": [], "best_trial": None}

    monkeypatch.setattr(flows.cli.common, "preflight", lambda p, settings, root: None)
    monkeypatch.setattr(flows.pipeline, "pipeline", lambda ctx, stop=None: {})
    monkeypatch.setattr(flows.stages.tune, "tune", fake_tune_stage)
    storage = _pg("optuna-cli", _free_port())
    res = runner.invoke(app, ["tune", "--task", "dna", "--storage", storage], env=stores)
    assert res.exit_code == 0, (res.output, res.exception)
    assert seen["storage"] == storage
    assert SECRET not in json.dumps(seen["parameters"])
    assert SECRET not in res.stdout + res.stderr


def test_flow_parameters_that_hold_the_settings_are_masked(tmp_path):
    from flows.benchmark import benchmark
    from flows.params import parse_params
    from flows.pipeline import make_context
    from flows.stages.tune import tune as tune_stage

    settings = load_settings(tracking_uri=_pg("mlflow", 5432), optuna_storage=_pg("optuna", 5432), device="cpu")
    sent = benchmark.serialize_parameters({"base": {}, "settings": settings, "out_dir": tmp_path})
    assert SECRET not in json.dumps(sent) and "user:***@" in json.dumps(sent)
    ctx = make_context(parse_params({}), settings, tmp_path)
    # The stage flows take the context, which holds the settings.
    assert SECRET not in json.dumps(tune_stage.serialize_parameters({"ctx": ctx}))


# ---------------------------------------------------------------- MLflow


def test_tracker_masks_passwords_in_params_and_tags(tmp_path):
    import mlflow

    from flows.tracking.runs import Tracker

    settings = load_settings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=tmp_path.as_uri())
    tracker = Tracker(settings, tmp_path / "ws")
    url = _pg("data", 5432)
    with tracker.stage("prepare", {"seed": 0, "data.source": url}, {"task": "dna", "origin": url}) as run:
        run.tags({"note": f"read from {url}"})
    client = mlflow.MlflowClient(settings.resolved_tracking_uri())
    runs = client.search_runs([tracker.experiment_id])
    assert len(runs) == 2  # the pipeline's parent run and the stage's child run
    for found in runs:
        stored = json.dumps([found.data.params, found.data.tags])
        assert SECRET not in stored and "user:***@" in stored
    assert _files_holding_the_secret(tmp_path) == []  # the store's own file included


# ---------------------------------------------------------------- the scheduled flow


def test_scheduled_runs_output_reaches_prefects_log_and_the_error_masked(tmp_path, caplog):
    from flows.deploy import _run_logged

    script = f"print('stage fit: cannot reach {_pg('mlflow', 5432)}'); raise SystemExit(3)"
    with caplog.at_level(logging.INFO, logger="flows.deploy"):
        with pytest.raises(RuntimeError, match=r"dvc exp run failed \(exit 3\)") as failed:
            _run_logged([sys.executable, "-c", script], str(tmp_path), dict(os.environ), "dvc exp run")
    assert "user:***@127.0.0.1" in str(failed.value) and SECRET not in str(failed.value)
    assert "user:***@127.0.0.1" in caplog.text and SECRET not in caplog.text


def test_an_unreachable_dvc_remote_is_reported_masked():
    from flows.dvc_remote import RemoteUnavailableError, check_reachable

    class _DeadFs:
        def ls(self, path):
            raise ConnectionError(f"cannot connect to https://ci:{SECRET}@dvc.internal/store")

    remote = SimpleNamespace(fs=_DeadFs(), path="store")
    repo = SimpleNamespace(cloud=SimpleNamespace(get_remote=lambda name: remote))
    with pytest.raises(RemoteUnavailableError, match=r"https://ci:\*\*\*@dvc.internal") as failed:
        check_reachable(repo, "shared")
    assert SECRET not in str(failed.value)
