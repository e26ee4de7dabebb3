"""The team's S3 store against a real S3 API (moto's server): DVC's remote cache, MLflow artifacts,
and the read-only bucket check ``recraft doctor`` runs on both.

DVC is driven through its command line in a throw-away git + DVC workspace, configured the way a
user would (``dvc remote add`` / ``dvc remote modify ... endpointurl``).
"""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from components.errors import UserError
from flows.storage import check_bucket, s3_client

pytestmark = pytest.mark.integration

DVC = str(Path(sys.executable).with_name("dvc"))

# A stage that writes pipeline-like outputs: a folder of arrays (one nested, one empty), a model
# file and a metrics file. Random bytes from a fixed seed: the same content on every run.
_MAKE = """\
import json, random
from pathlib import Path

rng = random.Random(0)
prepared = Path("data/prepared")
(prepared / "stats").mkdir(parents=True, exist_ok=True)
for name, size in (("train.npz", 300_000), ("val.npz", 40_000), ("test.npz", 40_000)):
    (prepared / name).write_bytes(rng.randbytes(size))
(prepared / "stats" / "norm.json").write_text(json.dumps({"mean": 0.25, "std": 1.5}))
(prepared / "empty.txt").write_bytes(b"")
Path("models").mkdir(exist_ok=True)
Path("models/model.safetensors").write_bytes(rng.randbytes(120_000))
Path("metrics").mkdir(exist_ok=True)
Path("metrics/evaluate.json").write_text(json.dumps({"test/accuracy": 0.75}))
"""
_OUTPUTS = ("data/prepared", "models", "metrics/evaluate.json", "data/raw.csv")


def _dvc(ws: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([DVC, *args], cwd=ws, capture_output=True, text=True, timeout=180, check=False)
    if ok:
        assert proc.returncode == 0, f"dvc {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _digests(ws: Path) -> dict[str, tuple[str, str]]:
    """Relative path -> (md5, sha256) of every file under the tracked outputs."""
    out = {}
    for top in _OUTPUTS:
        paths = [ws / top] if (ws / top).is_file() else sorted(p for p in (ws / top).rglob("*") if p.is_file())
        for path in paths:
            data = path.read_bytes()
            out[str(path.relative_to(ws))] = (hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest())
    return out


@pytest.fixture
def dvc_repo(tmp_path, monkeypatch) -> Path:
    """An empty git + DVC repository."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    ws = tmp_path / "ws"
    ws.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=ws, check=True)
    _dvc(ws, "init", "-q")
    return ws


@pytest.fixture
def workspace(dvc_repo) -> Path:
    """The repository with a one-stage ``dvc.yaml`` run and a ``dvc add``-ed raw file."""
    ws = dvc_repo
    (ws / "make.py").write_text(_MAKE)
    (ws / "dvc.yaml").write_text(
        "stages:\n"
        "  make:\n"
        f"    cmd: {sys.executable} make.py\n"
        "    deps: [make.py]\n"
        "    outs: [data/prepared, models]\n"
        "    metrics: [metrics/evaluate.json]\n"
    )
    (ws / "data").mkdir()
    rows = random.Random(1).choices(range(10), k=20_000)
    (ws / "data" / "raw.csv").write_text("x\n" + "\n".join(map(str, rows)) + "\n")
    _dvc(ws, "add", "-q", "data/raw.csv")
    _dvc(ws, "repro", "-q")
    return ws


def test_push_then_pull_restores_every_output_byte_for_byte(s3_endpoint, workspace):
    ws = workspace
    bucket = "dvc-round-trip"
    s3_endpoint.create_bucket(bucket)
    _dvc(ws, "remote", "add", "-d", "team", f"s3://{bucket}/dvc-cache")
    _dvc(ws, "remote", "modify", "team", "endpointurl", s3_endpoint.url)
    before = _digests(ws)
    assert len(before) == 8 and "data/prepared/stats/norm.json" in before and "data/prepared/empty.txt" in before

    _dvc(ws, "push")
    # DVC 3 stores objects by md5 (files/md5/ab/cdef...); a folder also gets a .dir listing.
    keys = s3_endpoint.keys(bucket, "dvc-cache/")
    stored = {k.removeprefix("dvc-cache/files/md5/").replace("/", "", 1) for k in keys}
    assert {md5 for md5, _ in before.values()} <= stored
    assert sum(k.endswith(".dir") for k in keys) == 2  # data/prepared and models
    assert "in sync" in _dvc(ws, "status", "--cloud").stdout

    # A fresh clone's view: no cache, no outputs; only the .dvc files and dvc.lock say what to fetch.
    for top in (".dvc/cache", *_OUTPUTS):
        path = ws / top
        subprocess.run(["rm", "-rf", str(path)], check=True)
        assert not path.exists()
    _dvc(ws, "pull")
    assert _digests(ws) == before
    status = _dvc(ws, "status", "--json").stdout
    assert json.loads(status) == {}  # every stage and .dvc file up to date


def test_a_missing_bucket_fails_push_and_is_named_by_the_check(s3_endpoint, dvc_repo):
    ws = dvc_repo
    (ws / "raw.csv").write_text("x\n1\n")
    _dvc(ws, "add", "-q", "raw.csv")
    _dvc(ws, "remote", "add", "-d", "nowhere", "s3://no-such-bucket/dvc-cache")
    _dvc(ws, "remote", "modify", "nowhere", "endpointurl", s3_endpoint.url)
    push = _dvc(ws, "push", ok=False)
    assert push.returncode != 0
    # DVC says what is wrong but not which bucket ("The specified bucket does not exist ...
    # (NoSuchBucket)"); the project's check, which `recraft doctor` runs, names it and the URL.
    assert "NoSuchBucket" in push.stderr, push.stdout + push.stderr
    buckets = [b["Name"] for b in s3_endpoint.client().list_buckets()["Buckets"]]
    assert "no-such-bucket" not in buckets  # dvc did not create it behind the user's back
    with pytest.raises(UserError, match="'no-such-bucket' does not exist") as info:
        check_bucket("s3://no-such-bucket/dvc-cache", s3_client(s3_endpoint.url, max_attempts=1))
    assert s3_endpoint.url in str(info.value) and "s3://no-such-bucket/dvc-cache" in info.value.hint


def test_check_bucket_reports_a_usable_location(s3_endpoint):
    url = s3_endpoint.create_bucket("checked") + "/mlflow"
    client = s3_client(s3_endpoint.url)
    assert check_bucket(url, client) == f"{url} at {s3_endpoint.url}: bucket exists and can be listed (empty so far)"
    client.put_object(Bucket="checked", Key="mlflow/0/meta.yaml", Body=b"x")
    client.put_object(Bucket="checked", Key="other/file", Body=b"x")
    assert check_bucket(url, client).endswith("(holds objects)")
    assert check_bucket("s3://checked/elsewhere", client).endswith("(empty so far)")  # only under the prefix


def test_check_bucket_names_rejected_credentials_without_the_secret(s3_endpoint, monkeypatch):
    url = s3_endpoint.create_bucket("guarded")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWNKEY000000")  # moto's IAM knows no such key
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-secret-never-shown")
    with s3_endpoint.checking_credentials():
        with pytest.raises(UserError, match=r"rejected the credentials \(InvalidAccessKeyId\)") as info:
            check_bucket(url, s3_client(s3_endpoint.url, max_attempts=1))
    assert "AWS_ACCESS_KEY_ID" in info.value.hint
    assert "a-secret-never-shown" not in str(info.value) + info.value.hint


def test_check_bucket_names_the_setting_of_an_unreachable_endpoint():
    from tests.integration.conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there
    client = s3_client(dead, max_attempts=1, connect_timeout=1, read_timeout=1)
    with pytest.raises(UserError, match="cannot reach the S3 endpoint") as info:
        check_bucket("s3://any-bucket/mlflow", client, "MLFLOW_S3_ENDPOINT_URL")
    assert dead in str(info.value) and "MLFLOW_S3_ENDPOINT_URL" in info.value.hint


def test_doctor_checks_the_dvc_remote_and_the_mlflow_artifact_root(s3_endpoint, dvc_repo, monkeypatch):
    from flows.doctor import run_checks
    from flows.settings import load_settings

    s3_endpoint.create_bucket("doctor")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint.url)
    _dvc(dvc_repo, "remote", "add", "-d", "team", "s3://doctor/dvc-cache")
    _dvc(dvc_repo, "remote", "modify", "team", "endpointurl", s3_endpoint.url)

    def rows(artifacts: str) -> dict[str, tuple[str, str]]:
        settings = load_settings(
            root=dvc_repo, tracking_uri=f"sqlite:///{dvc_repo / 'mlflow.db'}", artifact_location=artifacts
        )
        checks = run_checks(settings, dvc_repo)
        return {c.name: (c.status, c.detail) for c in checks if c.name in ("mlflow artifacts", "dvc remote")}

    good = rows("s3://doctor/mlflow")
    assert good["mlflow artifacts"] == ("ok", f"s3://doctor/mlflow at {s3_endpoint.url}: {_USABLE} (empty so far)")
    assert good["dvc remote"] == ("ok", f"team: s3://doctor/dvc-cache at {s3_endpoint.url}: {_USABLE} (empty so far)")

    _dvc(dvc_repo, "remote", "modify", "team", "url", "s3://missing-cache/dvc")
    bad = rows("s3://missing-artifacts/mlflow")
    assert bad["mlflow artifacts"][0] == bad["dvc remote"][0] == "fail"
    assert "'missing-artifacts' does not exist" in bad["mlflow artifacts"][1]
    assert "MLFLOW_S3_ENDPOINT_URL" in bad["mlflow artifacts"][1]
    assert "team: the S3 bucket 'missing-cache' does not exist" in bad["dvc remote"][1]
    assert "dvc remote modify team endpointurl" in bad["dvc remote"][1]

    monkeypatch.delenv("MLFLOW_S3_ENDPOINT_URL")
    local = rows((dvc_repo / "mlartifacts").as_uri())
    assert local["mlflow artifacts"][0] == "skip"


_USABLE = "bucket exists and can be listed"


def test_mlflow_artifacts_go_to_s3_and_come_back(s3_endpoint, tmp_path, monkeypatch):
    """The project's tracking adapter with an S3 artifact root: a file and a dict logged in a stage
    run are objects in the bucket, and a fresh client downloads them unchanged."""
    import mlflow

    from flows.settings import load_settings
    from flows.tracking.runs import Tracker

    bucket = "mlflow-artifacts"
    s3_endpoint.create_bucket(bucket)
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint.url)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = load_settings(tracking_uri=uri, artifact_location=f"s3://{bucket}/mlflow", experiment="team")
    report = tmp_path / "report.txt"
    report.write_text("headline: 0.75\n" * 100)
    doc = {"task": "dna", "test/accuracy": 0.75, "seconds": {"fit": 1.5}}
    with Tracker(settings, tmp_path / "ws").stage("evaluate", {"seed": 0}, {"task": "dna"}) as run:
        run.artifact(report, "reports")
        mlflow.log_dict(doc, "metrics/evaluate.json")

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("team")
    assert experiment.artifact_location == f"s3://{bucket}/mlflow"
    got = client.get_run(run.run_id)
    assert got.info.artifact_uri == f"s3://{bucket}/mlflow/{run.run_id}/artifacts"  # under the experiment's root
    assert {a.path for a in client.list_artifacts(run.run_id)} == {"reports", "metrics"}
    dest = tmp_path / "download"
    dest.mkdir()
    fresh = mlflow.MlflowClient(tracking_uri=uri)  # a new client: nothing cached from the logging side
    text = Path(fresh.download_artifacts(run.run_id, "reports/report.txt", str(dest))).read_text()
    assert text == report.read_text()
    logged = Path(fresh.download_artifacts(run.run_id, "metrics/evaluate.json", str(dest))).read_text()
    assert json.loads(logged) == doc

    prefix = f"mlflow/{run.run_id}/artifacts/"
    assert s3_endpoint.keys(bucket, prefix) == [f"{prefix}metrics/evaluate.json", f"{prefix}reports/report.txt"]
    body = s3_endpoint.client().get_object(Bucket=bucket, Key=f"{prefix}reports/report.txt")["Body"].read()
    assert body == report.read_bytes()
