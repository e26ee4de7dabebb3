"""A tiny real end-to-end run: real MiniLM cut to 2 layers, real DNA and WNUT subsets, Prefect's
test harness, MLflow in a temporary SQLite store."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from flows.tracking.runs import use_tracking_uri

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def e2e_run(tiny_run):
    """The session's tiny run (tests/conftest.py), shared with the predict and browser tests."""
    root, ctx, result, settings = tiny_run
    return root, ctx, result


def test_metrics_json_has_the_contract_keys(e2e_run):
    root, ctx, result = e2e_run
    on_disk = json.loads(ctx.layout.metrics("evaluate").read_text())
    assert on_disk == json.loads(json.dumps(result))
    for key in (
        "task",
        "method",
        "seed",
        "metric",
        "test/accuracy",
        "test/auroc",
        "val/accuracy",
        "bound/fa",
        "bound/fld",
        "bound/fit",
        "bound/value",
        "seconds",
    ):
        assert key in result, key
    assert 0.0 <= result["test/accuracy"] <= 1.0
    assert result["bound/value"] == pytest.approx(
        result["bound/fit"] + result["bound/lipschitz"] * result["bound/w"] + result["bound/fld"]
    )
    assert set(result["seconds"]) == {"assets", "prepare", "source", "tune", "align", "fit", "evaluate"}
    # The thread count decides float summation order, so it is recorded with the numbers.
    assert result["runtime"] == {"torch": torch.__version__, "torch_threads": str(torch.get_num_threads())}


def test_mlflow_has_one_parent_with_a_child_per_stage(e2e_run):
    import mlflow

    root, ctx, result = e2e_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recraft")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("recraft.pipeline") == "true"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    stages = {r.data.tags["recraft.stage"]: r for r in children}
    assert set(stages) == {"assets", "prepare", "source", "align", "fit", "evaluate"}
    assert stages["fit"].data.params["align.lambda_fa"] == "1.0"
    assert stages["fit"].data.tags["recraft.torch_threads"] == str(torch.get_num_threads())
    history = client.get_metric_history(stages["align"].info.run_id, "align/fa")
    assert [m.step for m in history] == list(range(ctx.params.align.epochs))
    # fit's curves against the optimiser step: the training loss every RECRAFT_LOG_EVERY steps
    # (1 here: the tiny fit takes 3), validation at each epoch's end; plots/fit_steps.csv holds
    # the same training curve.
    val = client.get_metric_history(stages["fit"].info.run_id, "val/accuracy")
    train = sorted(client.get_metric_history(stages["fit"].info.run_id, "fit/train_loss"), key=lambda m: m.step)
    steps = [m.step for m in train]
    assert len(steps) >= 3 and all(s % ctx.settings.log_every == 0 for s in steps[:-1]), steps
    assert sorted(m.step for m in val)[-1] == steps[-1]
    with open(ctx.layout.plot("fit_steps.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == steps
    assert [float(r["train_loss"]) for r in rows] == pytest.approx([m.value for m in train])
    # MLflow's system metrics on the training stages (every 2 s; align runs several seconds here).
    cpu = client.get_metric_history(stages["align"].info.run_id, "system/cpu_utilization_percentage")
    assert cpu and all(0 <= m.value <= 100 * os.cpu_count() for m in cpu)
    assert "system/cpu_utilization_percentage" not in stages["prepare"].data.metrics
    assert "test/accuracy" in stages["evaluate"].data.metrics
    assert parents[0].data.metrics["test/accuracy"] == pytest.approx(result["test/accuracy"])


def test_model_is_registered_with_signature_and_predicts_like_evaluate(e2e_run):
    import mlflow

    from components.data import load_split

    root, ctx, result = e2e_run
    use_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/recraft-dna@champion")
    signature = model.metadata.signature
    assert signature is not None and set(signature.outputs.input_names()) == {"predictions", "labels", "scores"}
    test = load_split(ctx.layout.prepared_dir / "test.npz")  # DNA is not normalised: raw = prepared
    out = model.predict(test.x)
    acc = float((out["predictions"] == test.y).mean())
    assert acc == pytest.approx(result["test/accuracy"])
    assert set(out["labels"]) <= {"Mafk", "Oct4"} and list(out["labels"][:5]) == [
        ["Mafk", "Oct4"][i] for i in out["predictions"][:5]
    ]
    np.testing.assert_allclose(out["scores"].sum(1), 1.0, rtol=1e-5)


def test_plots_are_written_and_logged(e2e_run):
    import mlflow

    root, ctx, result = e2e_run
    names = ["align.png", "alignment.png", "fit.png", "evaluate/confusion.png", "evaluate/bound.png"]
    for name in names:
        data = ctx.layout.plot(name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000, name
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recraft")
    runs = {r.data.tags.get("recraft.stage"): r for r in client.search_runs([exp.experiment_id])}
    logged = {
        a.path
        for stage in ("align", "fit", "evaluate")
        for a in client.list_artifacts(runs[stage].info.run_id, "plots")
    }
    assert {
        "plots/alignment.png",
        "plots/align.png",
        "plots/fit.png",
        "plots/confusion.png",
        "plots/bound.png",
    } <= logged


def test_the_parent_run_and_the_model_version_record_code_and_data_lineage(e2e_run):
    """The pipeline run names the commit of the code that ran (when the code is a git checkout,
    as the suite's is) and the DVC hashes of the prepared data and the model; the three splits
    are its dataset inputs with those files' hashes; the registered version carries the same."""
    import subprocess

    import mlflow

    from flows.lineage import CODE_ROOT, dvc_md5

    root, ctx, result = e2e_run
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recraft")
    parent = next(r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get("recraft.pipeline") == "true")
    tags = parent.data.tags
    head = subprocess.run(["git", "-C", str(CODE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["recraft.git.dirty"] in ("true", "false")
    else:  # not a checkout: no commit rather than a wrong one
        assert "mlflow.source.git.commit" not in tags
    assert tags["recraft.dvc.prepared"] == dvc_md5(ctx.layout.prepared_dir)
    assert tags["recraft.dvc.prepared"].endswith(".dir")
    assert tags["recraft.dvc.model"] == dvc_md5(ctx.layout.model_dir)
    inputs = {i.tags[0].value: i.dataset for i in parent.inputs.dataset_inputs}
    assert set(inputs) == {"train", "val", "test"}
    for context, dataset in inputs.items():
        assert dataset.digest == dvc_md5(ctx.layout.prepared_dir / f"{context}.npz")
        assert json.loads(dataset.source)["uri"] == f"data/prepared/{context}.npz"
    version = client.get_model_version_by_alias("recraft-dna", "champion")
    for key in ("recraft.dvc.prepared", "recraft.dvc.model", "mlflow.source.git.commit"):
        assert version.tags.get(key) == tags.get(key), key


def test_mlflow_models_serve_answers_like_recraft_predict_on_raw_inputs(e2e_run, tmp_path):
    """``mlflow models serve`` (local env manager, 127.0.0.1) on the registered version answers
    ``/invocations`` with raw inputs exactly as ``recraft predict`` does: class ids, class names
    and probabilities."""
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from components.data import load_split
    from flows.predict import predict
    from flows.settings import load_settings
    from tests.integration.test_s3_mirror import _free_port

    root, ctx, result = e2e_run
    uri = f"sqlite:///{root / 'mlflow.db'}"
    test = load_split(ctx.layout.prepared_dir / "test.npz")
    x = test.x[:16]
    np.savez(tmp_path / "in.npz", x=x)
    predict("recraft-dna@champion", tmp_path / "in.npz", tmp_path / "out.npz", "test", load_settings(tracking_uri=uri))
    with np.load(tmp_path / "out.npz") as f:
        expected = {k: f[k] for k in ("predictions", "scores", "class_names")}
    port = _free_port()
    # mlflow models serve execs uvicorn from PATH: the environment's bin first, as when it is activated.
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    cmd = [str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", "models:/recraft-dna@champion"]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlflow models serve did not answer /ping in 180 s"
                time.sleep(1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    np.testing.assert_array_equal(answer["predictions"], expected["predictions"])
    assert answer["labels"] == [str(expected["class_names"][i]) for i in expected["predictions"]]
    np.testing.assert_allclose(answer["scores"], expected["scores"], rtol=0, atol=1e-6)
