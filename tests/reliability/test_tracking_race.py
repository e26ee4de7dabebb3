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
    from flows.tracking import Tracker

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
