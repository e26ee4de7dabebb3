"""The benchmark flow on a tiny budget: every cell runs, is tagged, and the tables add up."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import TINY, local_settings

pytestmark = pytest.mark.slow


BENCH = TINY + ["prepare.max_train=120", "source.epochs=2", "align.epochs=1"]


def test_benchmark_runs_every_cell_and_writes_the_tables(prefect_harness, wheel_cache, tmp_path):
    import mlflow

    from flows.benchmark import benchmark
    from flows.params import apply_overrides, parse_params

    settings = local_settings(tmp_path, wheel_cache, checkpoint_every=0)
    base = parse_params(apply_overrides({}, BENCH)).model_dump(mode="json")
    out = tmp_path / "bench"
    summary = benchmark(base, ["dna"], ["nft", "orca"], [0, 1], settings, out, name="t")
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
    again = benchmark(base, ["dna"], ["nft", "orca"], [0, 1], settings, out, name="t")
    assert again["cells"] == summary["cells"]
