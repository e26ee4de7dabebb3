"""``recraft predict``, ``recraft doctor`` and ``recraft ui``: what they print, write and exit with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.tracking.runs import use_tracking_uri
from tests.integration.test_s3_mirror import _free_port

runner = CliRunner()


def _env(settings) -> dict[str, str]:
    return {"RECRAFT_TRACKING_URI": settings.resolved_tracking_uri(), "RECRAFT_DEVICE": "cpu"}


def _predict(settings, *args: str):
    return runner.invoke(app, ["predict", *map(str, args)], env=_env(settings))


@pytest.fixture(scope="module")
def raw_test(tiny_run, tmp_path_factory) -> Path:
    """The held-out test split as a user would hand it in: raw inputs and labels in a ``.npz``."""
    from components.data import load_split

    root, ctx, result, settings = tiny_run
    meta = json.loads((ctx.layout.prepared_dir / "meta.json").read_text())
    assert not meta["normalisation"]["applied"]  # one-hot DNA: the prepared inputs are the raw ones
    test = load_split(ctx.layout.prepared_dir / "test.npz")
    path = tmp_path_factory.mktemp("predict") / "test.npz"
    np.savez(path, x_test=test.x, y_test=test.y)
    return path


# ---------------------------------------------------------------- lineage


@pytest.mark.slow
def test_lineage_names_the_code_data_and_params_of_a_registered_version(tiny_run):
    from flows.lineage import code_tags, dvc_md5

    root, ctx, result, settings = tiny_run
    res = runner.invoke(app, ["lineage", "recraft-dna@champion", "--json"], env=_env(settings))
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout)
    assert info["model"] == "recraft-dna" and "champion" in info["aliases"]
    assert info["params"]["task"] == "dna" and info["params"]["seed"] == str(ctx.params.seed)
    assert info["lineage"]["recraft.dvc.prepared"] == dvc_md5(ctx.layout.prepared_dir)
    assert info["lineage"]["mlflow.source.git.commit"] == code_tags().get("mlflow.source.git.commit")
    assert info["datasets"]["test"] == {
        "digest": dvc_md5(ctx.layout.prepared_dir / "test.npz"),
        "source": "data/prepared/test.npz",
    }
    table = runner.invoke(app, ["lineage", f"recraft-dna/{info['version']}"], env=_env(settings))
    assert table.exit_code == 0 and info["pipeline_run_id"] in table.stdout, table.output
    assert info["lineage"]["recraft.dvc.prepared"] in table.stdout
    bad_specs = (("recraft-dna@nope", "cannot read model 'recraft-dna@nope'"), ("recraft-dna", "names no version"))
    for spec, words in bad_specs:
        bad = runner.invoke(app, ["lineage", spec], env=_env(settings))
        assert bad.exit_code == 2 and words in bad.output and "Traceback" not in bad.output, bad.output


# ---------------------------------------------------------------- predict


@pytest.mark.slow
def test_predict_reproduces_the_evaluate_stage_for_alias_run_and_directory(tiny_run, raw_test, tmp_path):
    import mlflow

    root, ctx, result, settings = tiny_run
    use_tracking_uri(settings.resolved_tracking_uri())
    run_id = mlflow.MlflowClient().get_model_version_by_alias("recraft-dna", "champion").run_id
    for i, model in enumerate(["recraft-dna@champion", f"runs:/{run_id}/model", ctx.layout.model_dir]):
        out = tmp_path / f"out{i}.npz"
        res = _predict(settings, "--model", model, "--input", raw_test, "--output", out)
        assert res.exit_code == 0, res.output
        assert "accuracy" in res.stdout and "predictions written to" in res.stdout
        with np.load(out, allow_pickle=False) as f:
            for name in ("accuracy", "auroc", "f1", "loss"):
                assert abs(float(f[f"metrics/{name}"]) - result[f"test/{name}"]) < 1e-6, (model, name)
            assert f["predictions"].shape == (60,) and f["predictions"].dtype == np.int64
            assert f["scores"].shape == (60, 2) and np.allclose(f["scores"].sum(1), 1.0, atol=1e-5)
            assert list(f["class_names"]) == ["Mafk", "Oct4"]
            assert (f["predictions"] == f["scores"].argmax(1)).all()


@pytest.mark.slow
def test_predict_without_labels_writes_predictions_only(tiny_run, raw_test, tmp_path):
    root, ctx, result, settings = tiny_run
    with np.load(raw_test) as f:
        np.savez(tmp_path / "x.npz", x=f["x_test"][:7])
    out = tmp_path / "p.npz"
    res = _predict(settings, "--model", ctx.layout.model_dir, "--input", tmp_path / "x.npz", "--output", out)
    assert res.exit_code == 0 and "metric" not in res.stdout
    with np.load(out) as f:
        assert sorted(f.files) == ["class_names", "predictions", "scores"] and f["predictions"].shape == (7,)


def _bad_inputs(raw_test: Path, folder: Path) -> dict[str, tuple[list[str], str]]:
    """Case -> (extra CLI args, a phrase the error line must hold)."""
    with np.load(raw_test) as f:
        x, y = f["x_test"], f["y_test"]
    files = {
        "keys.npz": {"inputs": x},
        "shape.npz": {"x_test": x[:, :, :100]},
        "labels.npz": {"x_test": x, "y_test": y + 5},
        "count.npz": {"x_test": x, "y_test": y[:10]},
        "nan.npz": {"x_test": np.where(x == 1, np.nan, x)},
    }
    for name, arrays in files.items():
        np.savez(folder / name, **arrays)
    (folder / "text.npz").write_text("not an npz")
    alias = ["--model", "recraft-dna@champion"]
    return {
        "missing file": ([*alias, "--input", str(folder / "nope.npz")], "does not exist"),
        "not an npz": ([*alias, "--input", str(folder / "text.npz")], "cannot read"),
        "wrong keys": ([*alias, "--input", str(folder / "keys.npz")], "no array 'x_test' or 'x'"),
        "wrong shape": ([*alias, "--input", str(folder / "shape.npz")], "expects (4, 200)"),
        "unknown labels": ([*alias, "--input", str(folder / "labels.npz")], "holds label"),
        "label count": ([*alias, "--input", str(folder / "count.npz")], "y has 10"),
        "nan inputs": ([*alias, "--input", str(folder / "nan.npz")], "NaN"),
        "unknown alias": (["--model", "recraft-dna@nope", "--input", str(raw_test)], "alias nope not found"),
        "unknown model": (["--model", "nope@champion", "--input", str(raw_test)], "name=nope not found"),
        "unknown run": (["--model", "runs:/0123abc/model", "--input", str(raw_test)], "0123abc not found"),
        "no such directory": (["--model", str(folder / "nodir"), "--input", str(raw_test)], "neither a model"),
    }


@pytest.mark.slow
def test_predict_bad_input_exits_2_with_one_line_and_writes_nothing(tiny_run, raw_test, tmp_path):
    root, ctx, result, settings = tiny_run
    cases = _bad_inputs(raw_test, tmp_path)
    before = sorted(tmp_path.iterdir())
    for case, (args, phrase) in cases.items():
        res = _predict(settings, *args, "--output", tmp_path / "out.npz")
        assert res.exit_code == 2, (case, res.output)
        lines = res.stderr.strip().splitlines()
        assert lines[0].startswith("error: ") and phrase in lines[0], (case, lines)
        assert "Traceback" not in res.stderr and all(line.startswith(("error: ", "hint: ")) for line in lines), case
    assert sorted(tmp_path.iterdir()) == before


def test_predict_against_a_missing_store_creates_nothing(tmp_path):
    store = tmp_path / "mlflow.db"
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 4, 200), dtype=np.float32))
    args = ["predict", "--model", "m@champion", "--input", str(tmp_path / "x.npz"), "--output", str(tmp_path / "o")]
    res = runner.invoke(app, args, env={"RECRAFT_TRACKING_URI": f"sqlite:///{store}"})
    assert res.exit_code == 2 and "no MLflow tracking store" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz"]


# ---------------------------------------------------------------- doctor


def _doctor(tmp_path: Path, **env: str):
    base = {
        "RECRAFT_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "RECRAFT_WHEEL_CACHE": str(tmp_path / "wheels"),
        "RECRAFT_ROOT": str(tmp_path),
        "RECRAFT_DEVICE": "cpu",
        "RECRAFT_ASSET_MIRROR": "",
        "RECRAFT_OPTUNA_STORAGE": "",
        "PREFECT_API_URL": "",
    }
    return runner.invoke(app, ["doctor", "--json"], env={**base, **env})


def test_doctor_passes_on_a_fresh_machine_and_creates_nothing(tmp_path):
    res = _doctor(tmp_path)
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    rows = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is True
    for name in ("python", "torch", "device", "tracking store", "dvc"):
        assert rows[name]["status"] == "ok", rows[name]
    assert rows["asset janggu-dna"]["status"] == "warn" and "not cached" in rows["asset janggu-dna"]["detail"]
    assert rows["extracted body"]["status"] == rows["s3 mirror"]["status"] == "skip"
    assert "not created yet" in rows["tracking store"]["detail"]
    assert "from RECRAFT_TRACKING_URI" in rows["tracking store"]["detail"]
    assert list(tmp_path.iterdir()) == []  # read-only: no store, no cache folder


def test_doctor_says_when_mlflow_tracking_uri_is_the_store_in_force(tmp_path):
    store = tmp_path / "mlflow-own.db"
    res = _doctor(tmp_path, RECRAFT_TRACKING_URI=None, MLFLOW_TRACKING_URI=f"sqlite:///{store}")
    detail = {c["name"]: c for c in json.loads(res.stdout)["checks"]}["tracking store"]["detail"]
    assert str(store) in detail and "from MLFLOW_TRACKING_URI" in detail, detail


def test_doctor_says_which_experiment_registry_and_aws_settings_are_in_force(tmp_path):
    res = _doctor(
        tmp_path,
        MLFLOW_EXPERIMENT_NAME="team-exp",
        MLFLOW_REGISTRY_URI=f"sqlite:///{tmp_path / 'registry.db'}",
        AWS_PROFILE="research",
        AWS_SECRET_ACCESS_KEY="do-not-print",
        AWS_ENDPOINT_URL="http://127.0.0.1:9000",
        RECRAFT_S3_ENDPOINT_URL="",
    )
    assert res.exit_code == 0, res.output
    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert rows["mlflow experiment"]["detail"] == "team-exp (from MLFLOW_EXPERIMENT_NAME)"
    assert "registry.db (from MLFLOW_REGISTRY_URI)" in rows["model registry"]["detail"]
    aws = rows["aws"]["detail"]
    assert "http://127.0.0.1:9000 (from AWS_ENDPOINT_URL)" in aws and "AWS_PROFILE" in aws
    assert "do-not-print" not in res.stdout  # variables by name, never by value
    # RECRAFT_* wins over the tool's own variable
    res = _doctor(tmp_path, RECRAFT_EXPERIMENT="mine", MLFLOW_EXPERIMENT_NAME="team-exp")
    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    assert rows["mlflow experiment"]["detail"] == "mine (from RECRAFT_EXPERIMENT)"


def test_doctor_fails_for_unreachable_stores(tmp_path):
    port = _free_port()  # nothing listens there
    res = _doctor(
        tmp_path,
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        RECRAFT_OPTUNA_STORAGE="not a url",
    )
    assert res.exit_code == 1, res.output
    report = json.loads(res.stdout)
    rows = {c["name"]: c for c in report["checks"]}
    assert report["ok"] is False
    assert rows["prefect api"]["status"] == "fail" and f"127.0.0.1:{port}" in rows["prefect api"]["detail"]
    assert rows["optuna storage"]["status"] == "fail"
    assert rows["python"]["status"] == "ok"


@pytest.mark.slow
def test_doctor_verifies_cached_wheels_and_extracted_assets(tiny_run, wheel_cache):
    root, ctx, result, settings = tiny_run
    env = {
        "RECRAFT_TRACKING_URI": settings.resolved_tracking_uri(),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_ROOT": str(ctx.layout.root),
    }
    res = runner.invoke(app, ["doctor"], env=env)
    assert res.exit_code == 0, res.output
    table = res.stdout
    assert "recraft doctor" in table and "sha256 verified" in table and "experiment(s)" in table
    res = runner.invoke(app, ["doctor", "--json"], env=env)
    rows = {c["name"]: c for c in json.loads(res.stdout)["checks"]}
    for name in ("asset janggu-dna", "asset minilm-l6", "asset wnut16", "extracted body", "extracted target"):
        assert rows[name]["status"] == "ok", rows[name]


# ---------------------------------------------------------------- ui


@contextmanager
def ui_server(tracking_uri: str, log: Path) -> Iterator[str]:
    """``recraft ui`` on a free port of 127.0.0.1 in its own process group; yields its URL."""
    port = _free_port()
    env = {**os.environ, "RECRAFT_TRACKING_URI": tracking_uri, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "ui", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # mlflow ui starts workers: stop the whole group
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"recraft ui exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError as exc:
                if time.monotonic() > deadline:
                    raise AssertionError(f"recraft ui did not answer within 120 s: {log.read_text()[-2000:]}") from exc
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ui_serves_the_mlflow_ui_for_the_project_store(tmp_path):
    with ui_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "ui.log") as url:
        with urllib.request.urlopen(f"{url}/", timeout=10) as response:
            assert response.status == 200
            assert b"<html" in response.read(4096).lower()
    assert "MLflow UI for sqlite:///" in (tmp_path / "ui.log").read_text()
