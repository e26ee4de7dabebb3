"""The benchmark flow on a tiny budget: every cell runs, is tagged, and the tables add up."""

from __future__ import annotations

import csv
import json
import math

import pytest

from tests.conftest import TINY, local_settings

pytestmark = pytest.mark.slow


BENCH = TINY + ["prepare.max_train=120", "source.epochs=2", "align.epochs=1"]


def _bench(out, extra=()):
    from typer.testing import CliRunner

    from flows.cli import app

    # Seeds 1 and 2 (--first-seed); orca and the FLD-only variant on the first only: recraft - orca
    # pairs one seed, recraft - nft two.
    args = ["bench", "--tasks", "dna", "--methods", "nft,orca,recraft", "--seeds", "2", "--first-seed", "1"]
    args += ["--variant", "fld-only=recraft:align.lambda_fa=0", "--seeds-for", "orca=1,fld-only=1"]
    args += ["--budget", "full"]
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


def test_bench_refuses_bad_seeds_for_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    for args, message in (
        (["--seeds-for", "magic=2"], "'magic'"),
        (["--methods", "nft,fa", "--seeds-for", "orca=2"], "'orca'"),
        (["--seeds-for", "fa=0"], "fa=0"),
        (["--seeds-for", "fa=-1"], "fa=-1"),
        (["--seeds", "3", "--seeds-for", "scratch=4"], "scratch=4"),
        (["--seeds-for", "fa=three"], "'three'"),
        (["--seeds-for", "fa"], "'fa'"),
        (["--seeds-for", "fa=2,fa=1"], "'fa' twice"),
    ):
        result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1, (args, result.output)
    assert not (tmp_path / "b").exists()


def test_bench_refuses_bad_variants_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    for variant, message in (
        ("fld-only", "LABEL=METHOD:KEY=VALUE"),
        ("fld-only=recraft", "LABEL=METHOD:KEY=VALUE"),
        ("fa=recraft:align.lambda_fld=0", "'fa' is a method's name"),
        ("a b=recraft:align.lambda_fa=0", "not a plain name"),
        ("x=magic:align.lambda_fa=0", "unknown method 'magic'"),
        ("x=recraft:prepare.max_train=50", "'prepare'"),
        ("x=recraft:model.body=gpt2", "'model.body'"),
        ("x=recraft:method=nft", "'method'"),
        ("x=recraft:align.lambda_faa=0", "align.lambda_faa"),
        ("x=recraft:align.lambda_fa=-1", "align.lambda_fa"),
    ):
        result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), "--variant", variant])
        assert result.exit_code == 2 and message in result.output, (variant, result.output)
        assert len(result.output.strip().splitlines()) == 1, (variant, result.output)
    twice = ["--variant", "x=recraft:align.lambda_fa=0", "--variant", "x=recraft:align.lambda_fld=0"]
    result = CliRunner().invoke(app, ["bench", "--out", str(tmp_path / "b"), *twice])
    assert result.exit_code == 2 and "'x' twice" in result.output
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
    ran = [("fld-only", "1"), ("nft", "1"), ("nft", "2"), ("orca", "1"), ("recraft", "1"), ("recraft", "2")]
    assert sorted((r["method"], r["seed"]) for r in rows) == ran
    for r in rows:
        assert float(r["error"]) == pytest.approx(1 - float(r["test"]))
        assert float(r["collapsed"]) in (0.0, 1.0)
    cell = summary["cells"]["dna/recraft"]
    errors = {(r["method"], r["seed"]): float(r["error"]) for r in rows}
    assert cell["n"] == 2 and cell["mean"] == pytest.approx((errors[("recraft", "1")] + errors[("recraft", "2")]) / 2)
    assert summary["cells"]["dna/orca"]["n"] == 1
    assert summary["ratio_to_nft"]["dna/nft"] == pytest.approx(1.0)
    assert sum(summary["average_rank"].values()) == pytest.approx(10.0)  # ranks 1..4, ties share
    assert summary["bound_spearman"]["n"] == 6
    assert summary["methods"] == ["fld-only", "nft", "orca", "recraft"]
    _check_paired(summary["paired"], errors)
    ablation = summary["ablation"]["fld-only-recraft"]  # its own Holm family, apart from the headline
    assert (ablation["a"], ablation["b"], ablation["n"]) == ("fld-only", "recraft", 1)
    fld_only_diff = errors[("fld-only", "1")] - errors[("recraft", "1")]
    assert ablation["per_task"]["dna"]["diffs"] == pytest.approx([fld_only_diff])
    assert ablation["p_holm"] == pytest.approx(ablation["p"])
    assert summary["collapsed"].keys() == {"fld-only", "nft", "orca", "recraft"}
    for method, runs in (("fld-only", 1), ("nft", 2), ("orca", 1), ("recraft", 2)):
        counts = summary["collapsed"][method]
        assert counts["runs"] == runs and 0 <= counts["collapsed"] <= runs
    table = (out / "table.md").read_text()
    assert "| dna (accuracy) |" in table and "geo-mean ratio to nft" in table
    assert "| dna | recraft - nft | 2 |" in table and "| dna | recraft - orca | 1 |" in table
    assert "recraft vs nft: pooled over 2 paired runs" in table and "Holm-adjusted p" in table
    assert "| dna | fld-only - recraft | 1 |" in table and "Ablation: each variant" in table
    assert "- dna: rho = " in table and f"- orca: {summary['collapsed']['orca']['collapsed']} of 1" in table

    # Each cell is one finished MLflow pipeline run tagged with method, task, seed and the benchmark.
    client = mlflow.MlflowClient(settings.resolved_tracking_uri())
    exp = client.get_experiment_by_name("recraft")
    cells = client.search_runs(
        [exp.experiment_id], "tags.`recraft.benchmark` = 't' and tags.`recraft.pipeline` = 'true'"
    )
    finished = [r for r in cells if "test/accuracy" in r.data.metrics]
    label = {r.info.run_id: r.data.tags.get("recraft.variant", r.data.tags["method"]) for r in finished}
    assert sorted((label[r.info.run_id], r.data.tags["seed"]) for r in finished) == ran
    for r in finished:  # the variant's run is recraft with FA switched off; the others keep FA on
        variant = label[r.info.run_id] == "fld-only"
        assert r.data.tags["method"] == ("recraft" if variant else label[r.info.run_id])
        assert float(r.data.params["align.lambda_fa"]) == (0.0 if variant else 1.0)
    assert all(r.info.status == "FINISHED" for r in cells)

    # Stage 0 ran once per seed, not once per cell; a rerun reads finished cells back.
    assert sorted(p.name for p in (out / "shared").iterdir()) == ["dna-seed1", "dna-seed2", "seed1", "seed2"]
    assert _bench(out).exit_code == 0
    assert json.loads((out / "summary.json").read_text())["cells"] == summary["cells"]


def _check_paired(paired: dict, errors: dict[tuple[str, str], float]) -> None:
    """Both comparisons, paired by seed: recraft - nft on seeds 1 and 2, recraft - orca on seed 1."""
    assert paired.keys() == {"recraft-nft", "recraft-orca"}
    for key, other, seeds in (("recraft-nft", "nft", ("1", "2")), ("recraft-orca", "orca", ("1",))):
        c = paired[key]
        diffs = [errors[("recraft", s)] - errors[(other, s)] for s in seeds]
        task = c["per_task"]["dna"]
        assert (c["a"], c["b"], c["n"], c["tasks"], task["n"]) == ("recraft", other, len(seeds), 1, len(seeds))
        assert task["diffs"] == pytest.approx(diffs) and task["mean"] == pytest.approx(sum(diffs) / len(diffs))
        if len(seeds) > 1:
            assert task["low"] - 1e-12 <= task["mean"] <= task["high"] + 1e-12
        else:  # one seed: no interval
            assert math.isnan(task["low"]) and math.isnan(task["high"])
        # n paired seeds cannot reach p < 2 / 2^n; Holm only raises p
        assert 2 / 2 ** len(seeds) <= c["p"] <= c["p_holm"] <= 1.0
        assert c["tasks_a_at_least_as_good"] == int(task["mean"] <= 0)
