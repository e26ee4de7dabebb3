"""Several processes opening one new SQLite MLflow store at once all get the same experiment.

Seen for real: `recraft run` and `recraft tune` started together in one directory; the second
failed in MLflow's schema migration ("expected to match one row ... in 'alembic_version'")."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

pytestmark = pytest.mark.reliability


def _open(root: str, barrier, out) -> None:
    import mlflow  # noqa: F401 - imported before the barrier so that the processes start together

    from flows.settings import load_settings
    from flows.tracking.runs import Tracker

    settings = load_settings(tracking_uri=f"sqlite:///{root}/mlflow.db", artifact_location=Path(root).as_uri())
    barrier.wait()
    try:
        out.put(("ok", Tracker(settings, Path(root)).experiment_id))
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        out.put(("error", repr(exc)))


def test_concurrent_first_use_of_a_sqlite_store(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    n = 3
    barrier, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_open, args=(str(tmp_path), barrier, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=300) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
    assert all(kind == "ok" for kind, _ in results), results
    assert len({exp for _, exp in results}) == 1, results


def test_a_tracker_leaves_the_process_environment_as_it_was(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which Settings honours: without the
    undo, the next workspace in this process (or a subprocess of it) would log to this store."""
    import os

    from flows.settings import load_settings
    from flows.tracking.runs import Tracker

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = load_settings(root=tmp_path / "a")
    (tmp_path / "a").mkdir()
    Tracker(first, tmp_path / "a")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert load_settings(root=tmp_path / "b").resolved_tracking_uri() == f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///somewhere.db")
    Tracker(load_settings(root=tmp_path / "a", tracking_uri=first.resolved_tracking_uri()), tmp_path / "a")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///somewhere.db"  # the user's own, kept
