"""The benchmark flow on a tiny budget: every cell runs, is tagged, and the tables add up."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import TINY, local_settings

pytestmark = pytest.mark.slow


BENCH = TINY + ["prepare.max_train=120", "source.epochs=2", "align.epochs=1"]


def _bench(out, extra=()):
    from typer.testing import CliRunner

    from flows.cli import app

    args = ["bench", "--tasks", "dna", "--methods", "nft,orca", "--seeds", "2", "--budget", "full"]
    args += ["--out", str(out), "--name", "t", *extra]
    for override in BENCH:
        args += ["--set", override]
    return CliRunner().invoke(app, args)


def test_bench_refuses_bad_input_before_running(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    for args, message in (
        (["--methods", "fa,recraft"], "must include nft"),
        (["--methods", "nft,magic"], "unknown method 'magic'"),
        (["--tasks", "dna,nope"], "nope"),
        (["--budget", "huge"], "--budget 'huge'"),
    ):
        result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
    assert not (tmp_path / "b").exists()


def test_benchmark_runs_every_cell_and_writes_the_tables(prefect_harness, wheel_cache, tmp_path, monkeypatch):
    import mlflow

    settings = local_settings(tmp_path, wheel_cache, checkpoint_every=0)
    for key in ("tracking_uri", "artifact_location", "wheel_cache", "device", "checkpoint_every"):
        monkeypatch.setenv(f"RECRAFT_{key.upper()}", str(getattr(settings, key)))
    out = tmp_path / "bench"
    result = _bench(out)
    assert result.exit_code == 0, result.output
    assert "geo-mean ratio to nft" in result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader((out / "runs.csv").open()))
    assert sorted((r["method"], r["seed"]) for r in rows) == [("nft", "0"), ("nft", "1"), ("orca", "0"), ("orca", "1")]
    for r in rows:
        assert float(r["error"]) == pytest.approx(1 - float(r["test"]))
    cell = summary["cells"]["dna/orca"]
    errors = [float(r["error"]) for r in rows if r["method"] == "orca"]
    assert cell["n"] == 2 and cell["mean"] == pytest.approx(sum(errors) / 2)
    assert summary["ratio_to_nft"]["dna/nft"] == pytest.approx(1.0)
    assert sorted(summary["average_rank"].values()) in ([1.0, 2.0], [1.5, 1.5])
    assert summary["bound_spearman"]["n"] == 4
    table = (out / "table.md").read_text()
    assert "| dna (accuracy) |" in table and "geo-mean ratio to nft" in table
    assert json.loads((out / "summary.json").read_text())["methods"] == ["nft", "orca"]

    # Each cell is one finished MLflow pipeline run tagged with method, task, seed and the benchmark.
    client = mlflow.MlflowClient(settings.resolved_tracking_uri())
    exp = client.get_experiment_by_name("recraft")
    cells = client.search_runs(
        [exp.experiment_id], "tags.`recraft.benchmark` = 't' and tags.`recraft.pipeline` = 'true'"
    )
    finished = [r for r in cells if "test/accuracy" in r.data.metrics]
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in finished) == [
        ("nft", "0"),
        ("nft", "1"),
        ("orca", "0"),
        ("orca", "1"),
    ]
    assert all(r.info.status == "FINISHED" for r in cells)

    # Stage 0 ran once per seed, not once per cell; a rerun reads finished cells back.
    assert sorted(p.name for p in (out / "shared").iterdir()) == ["dna-seed0", "dna-seed1", "seed0", "seed1"]
    assert _bench(out).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["cells"] == summary["cells"]
