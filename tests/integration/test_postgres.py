"""The team's database: Optuna workers sharing one study, and MLflow's backend store, on a real
PostgreSQL server (started by the ``postgres_server`` fixture on 127.0.0.1).

MLflow and Optuna get a database each, as a team would run them: both keep their schema version
in an ``alembic_version`` table, so one database cannot hold both.
"""

from __future__ import annotations

import multiprocessing

import pytest

pytestmark = pytest.mark.integration

# The per-trial budget of the 4-worker tune test, on top of tests.conftest.TINY (imported where
# used: the spawned Optuna processes import this module, and should not import torch for it).
TUNE = [
    "align.epochs=1",  # trial 0 runs params.yaml's own values: keep them inside the searched range
    "tune.max_train=64",
    "tune.fit_epochs=1",
    "tune.align_epochs=[1,1]",
    "tune.pruner=none",
]


# The test server trusts local connections and ignores a password, so the URLs here carry one:
# the runs must work through such URLs and never store or print it.
SECRET = "S3CRET"


def _with_password(url: str) -> str:
    user, at, rest = url.partition("@")
    return f"{user}:{SECRET}{at}{rest}"


@pytest.fixture(scope="module")
def mlflow_url(postgres_server) -> str:
    """An MLflow backend store in its own PostgreSQL database (schema created on first use)."""
    return _with_password(postgres_server.create_database("mlflow"))


def _count(url: str, table: str) -> int:
    """Rows of ``table``, read with SQL straight from the server (no MLflow or Optuna code)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
    finally:
        engine.dispose()


# ---------------------------------------------------------------- MLflow


def test_mlflow_runs_params_metrics_and_tags_round_trip(mlflow_url, tmp_path):
    """The project's tracking adapter on a PostgreSQL store: a pipeline parent run with a nested
    stage run, read back by a fresh client through ``search_runs``."""
    import mlflow

    from flows.settings import load_settings
    from flows.tracking.runs import Tracker

    settings = load_settings(
        tracking_uri=mlflow_url, artifact_location=(tmp_path / "artifacts").as_uri(), experiment="pg-round-trip"
    )
    tracker = Tracker(settings, tmp_path / "ws")
    params = {"fit.lr": 0.001, "fit.epochs": 3, "align.fld_variant": "ce"}
    with tracker.stage("fit", params, {"task": "dna", "method": "recraft"}, close_parent=True) as run:
        for epoch in range(3):
            run.metrics({"val/accuracy": 0.5 + 0.1 * epoch, "train/loss": 1.0 / (epoch + 1)}, step=epoch)
        run.tags({"state": "complete"})
    tracker.log_parent_metrics({"test/accuracy": 0.8, "not-finite": float("nan")})

    client = mlflow.MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name("pg-round-trip")
    assert experiment.artifact_location == (tmp_path / "artifacts").as_uri()
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) == 2
    parent, child = runs
    assert parent.data.tags["recraft.pipeline"] == "true" and parent.info.status == "FINISHED"
    assert parent.data.metrics == {"test/accuracy": 0.8}  # the NaN was dropped, not stored
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.tags["recraft.stage"] == "fit" and child.data.tags["state"] == "complete"
    assert child.data.params == {"fit.lr": "0.001", "fit.epochs": "3", "align.fld_variant": "ce"} == parent.data.params
    assert child.info.status == "FINISHED" and child.info.run_id == run.run_id
    history = client.get_metric_history(child.info.run_id, "val/accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.5), (1, pytest.approx(0.6)), (2, pytest.approx(0.7))]
    assert child.data.metrics["train/loss"] == pytest.approx(1 / 3)  # the latest step's value

    query = "params.`fit.lr` = '0.001' and tags.`recraft.stage` = 'fit' and metrics.`val/accuracy` > 0.65"
    found = client.search_runs([experiment.experiment_id], query)
    assert [r.info.run_id for r in found] == [child.info.run_id]
    assert _count(mlflow_url, "runs") >= 2 and _count(mlflow_url, "metrics") >= 7  # really in PostgreSQL


# ---------------------------------------------------------------- Optuna


def _optimize(url: str, study: str, n: int, worker: int) -> None:
    """One process's share of a study with a quick objective (a module-level function: spawn)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.RandomSampler(seed=worker)
    loaded = optuna.load_study(study_name=study, storage=url, sampler=sampler)
    loaded.optimize(lambda t: (t.suggest_float("x", -3, 3) - 1) ** 2, n_trials=n)


def test_four_processes_share_one_study_without_losing_trials(postgres_server):
    """Bare Optuna, many short trials: the storage itself under contention from 4 processes,
    which also race for the same queued (enqueued) trials."""
    import optuna

    url = postgres_server.create_database("optuna_bare")
    study = optuna.create_study(study_name="contention", storage=url, direction="minimize")
    queued = [-2.5, -1.5, 0.5, 2.5]
    for x in queued:
        study.enqueue_trial({"x": x})
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_optimize, args=(url, "contention", 10, i)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]

    trials = optuna.load_study(study_name="contention", storage=url).get_trials()
    assert sorted(t.number for t in trials) == list(range(40))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({t.params["x"] for t in trials}) == 40  # four samplers, four streams of values
    assert sorted(t.params["x"] for t in trials if t.number < len(queued)) == queued  # each queued one once
    assert _count(url, "trials") == 40


def _small_task(path) -> str:
    """A bring-your-own ``.npz`` task, two classes told apart by channel means: (N, 4, 24) inputs.

    Small on purpose: four trial processes on two cores pay for every validation pass, and the
    DNA task validates on 780 sequences of 200 steps twice per trial.
    """
    import numpy as np

    rng = np.random.default_rng(0)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, n)
        x = rng.normal(size=(n, 4, 24)) + y[:, None, None] * np.array([1.0, -1.0, 0.5, 0.0])[None, :, None]
        return x.astype(np.float32), y

    arrays = {}
    for part, n in (("train", 96), ("val", 32), ("test", 32)):
        arrays[f"x_{part}"], arrays[f"y_{part}"] = split(n)
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def workspace(prefect_harness, wheel_cache, mlflow_url, tmp_path_factory):
    """A tiny workspace with prepared data and stage-0 outputs, tracked in PostgreSQL."""
    from flows.params import apply_overrides, parse_params
    from flows.pipeline import make_context, pipeline
    from flows.settings import load_settings
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("tune_pg")
    settings = load_settings(
        tracking_uri=mlflow_url,
        artifact_location=(root / "artifacts").as_uri(),
        wheel_cache=wheel_cache,
        device="cpu",
        checkpoint_every=0,
    )
    params = parse_params(apply_overrides({}, [*TINY, *TUNE, f"task={_small_task(root / 'task.npz')}"]))
    pipeline(make_context(params, settings, root / "ws"), stop="source")
    return root, settings, params


@pytest.mark.slow
def test_four_tune_workers_share_one_postgres_study(workspace, postgres_server, mlflow_url, capfd):
    """``recraft tune`` with ``tune.n_workers=4``: four spawned processes run the real objective on
    one study in PostgreSQL, each trial once, each with its MLflow child run.

    One trial per worker, the least that puts every process to work: each spawned worker first
    imports torch, Prefect and MLflow (on two busy cores the four took ~75 s to reach their first
    trial). The bare-Optuna test above covers many trials per process.
    """
    import mlflow
    import optuna

    from flows.pipeline import make_context
    from flows.search_space import current_values, study_name, with_values
    from flows.stages.tune import tune as tune_stage

    root, settings, params = workspace
    storage = _with_password(postgres_server.create_database("optuna"))
    n = 4
    params = with_values(
        params, {"tune.n_trials": n, "tune.n_workers": 4, "tune.sampler_seed": 7, "tune.confirm_top": 0}
    )
    summary = tune_stage(make_context(params, settings, root / "ws"), search=True, storage_url=storage)

    assert sorted(t["number"] for t in summary["trials"]) == list(range(n))
    assert summary["n_complete"] == n
    study = optuna.load_study(study_name=study_name(params), storage=storage)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(n))  # none lost, none twice
    assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}  # the pruner is off
    assert len({tuple(sorted(t.params.items())) for t in trials}) == n  # the workers sampled apart
    baseline = [t for t in trials if t.user_attrs.get("baseline")]  # queued once, raced for by all four
    assert len(baseline) == 1 and baseline[0].params == current_values(params)

    client = mlflow.MlflowClient(tracking_uri=mlflow_url)
    experiment = client.get_experiment_by_name(settings.experiment)
    parents = client.search_runs([experiment.experiment_id], f"tags.`recraft.study` = '{study.study_name}'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs(
        [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'", max_results=1000
    )
    assert sorted(int(c.data.tags["recraft.trial"]) for c in children) == list(range(n))
    values = {t.number: t.value for t in trials}
    for child in children:
        assert child.info.status == "FINISHED" and child.data.tags["state"] == "complete"
        assert child.data.metrics["value"] == pytest.approx(values[int(child.data.tags["recraft.trial"])])
    assert parents[0].data.metrics["best_value"] == pytest.approx(study.best_value)

    # Both stores' password: in no MLflow param or tag, no workspace or artifact file, no output.
    everything = client.search_runs([experiment.experiment_id], max_results=1000)
    assert everything and all(SECRET not in repr([r.data.params, r.data.tags]) for r in everything)
    assert [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()] == []
    out, err = capfd.readouterr()
    assert SECRET not in out + err
