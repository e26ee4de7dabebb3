"""Fault injection on the tracking server: a real ``mlflow server`` behind a proxy that answers
the first requests with 503. The stage's child run, its params and metrics all arrive."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_s3_mirror import _free_port, _proxy

pytestmark = [pytest.mark.integration, pytest.mark.reliability]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--default-artifact-root",
        (root / "artifacts").as_uri(),
        "--workers",
        "1",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError("mlflow server did not start")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_stage_run_survives_503s_from_the_tracking_server(mlflow_server, tmp_path, monkeypatch):
    import mlflow

    from flows.settings import load_settings
    from flows.tracking.runs import Tracker

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")  # 1 s, 2 s... (default factor 2)
    with _proxy(mlflow_server, failures=2) as proxy:
        settings = load_settings(tracking_uri=proxy.url, experiment="faults")
        tracker = Tracker(settings, tmp_path)
        with tracker.stage("fit", {"fit.lr": 0.001}, {"task": "dna"}) as run:
            for epoch in range(3):
                run.metrics({"val/accuracy": 0.5 + 0.1 * epoch}, step=epoch)
    statuses = [status for _, status in proxy.requests]
    assert statuses[:2] == [503, 503] and 503 not in statuses[2:]  # the 503s hit, then retries went through
    client = mlflow.MlflowClient(tracking_uri=mlflow_server)  # straight to the server
    child = client.get_run(run.run_id)
    assert child.data.params["fit.lr"] == "0.001" and child.info.status == "FINISHED"
    history = client.get_metric_history(run.run_id, "val/accuracy")
    assert [m.value for m in history] == pytest.approx([0.5, 0.6, 0.7])
