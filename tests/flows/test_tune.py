"""The Optuna search: its space, MLflow nesting, the tuned params file, pruning, resume, workers."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import TINY, local_settings

pytestmark = pytest.mark.slow


TUNE = TINY + [
    "prepare.max_train=200",
    "tune.max_train=96",
    "tune.fit_epochs=2",
    "tune.align_epochs=[1,2]",
    "tune.pruner=none",
]


def test_search_space_is_a_pure_function_of_the_trial():
    import optuna

    from flows.params import apply_overrides, parse_params
    from flows.search_space import suggest

    base = parse_params(apply_overrides({}, ["tune.eps=null", "tune.schedule=[sequential]"]))
    fixed = {
        "lambda_fa": 2.0,
        "lambda_fld": 0.5,
        "fld_variant": "ce",
        "schedule": "sequential",
        "align_epochs": 3,
        "align_lr": 0.002,
        "fit_lr": 1e-4,
    }
    p = suggest(optuna.trial.FixedTrial(fixed), base)
    assert (p.align.lambda_fa, p.align.lambda_fld, p.align.fld_variant) == (2.0, 0.5, "ce")
    assert (p.align.schedule, p.align.epochs, p.align.lr, p.fit.lr) == ("sequential", 3, 0.002, 1e-4)
    assert p.align.eps == base.align.eps  # not searched: the section's own value
    assert p.model_copy(update={"align": base.align, "fit": base.fit}) == base  # nothing else moves
    with pytest.raises(ValueError):  # eps is not in this space, so FixedTrial has no value for it...
        suggest(optuna.trial.FixedTrial(fixed), parse_params({}))


def test_bad_ranges_are_refused_with_the_key():
    from components.errors import UserError
    from flows.params import apply_overrides, parse_params

    with pytest.raises(UserError, match="tune.lambda_fa"):
        parse_params(apply_overrides({}, ["tune.lambda_fa=[2.0,1.0]"]))
    with pytest.raises(UserError, match="tune.align_lr"):
        parse_params(apply_overrides({}, ["tune.align_lr=[0,0.1]"]))


@pytest.fixture(scope="module")
def workspace(prefect_harness, wheel_cache, tmp_path_factory):
    """A tiny workspace with assets, prepared data and stage-0 outputs (what tune reads)."""
    from flows.params import apply_overrides, parse_params
    from flows.pipeline import make_context, pipeline

    root = tmp_path_factory.mktemp("tune")
    settings = local_settings(root, wheel_cache, checkpoint_every=0)
    params = parse_params(apply_overrides({}, TUNE))
    pipeline(make_context(params, settings, root / "ws"), stop="source")
    return root, settings, params


def _context(workspace, overrides):
    from flows.pipeline import make_context
    from flows.search_space import with_values

    root, settings, params = workspace
    return make_context(with_values(params, overrides), settings, root / "ws")


def _runs(root, study: str):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exp = client.get_experiment_by_name("recraft")
    parents = client.search_runs([exp.experiment_id], f"tags.`recraft.study` = '{study}'")
    assert len(parents) == 1
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return client, parents[0], children


def test_three_trials_nest_in_mlflow_and_write_the_best_values(workspace, tmp_path):
    from flows.search_space import SPACE, current_values, study_name
    from flows.stages.tune import tune as tune_stage

    root = workspace[0]
    ctx = _context(workspace, {"tune.n_trials": 3, "tune.sampler_seed": 1})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary = tune_stage(ctx, search=True, storage_url=storage)
    assert summary["n_complete"] == 3 and summary["direction"] == "maximize"
    doc = yaml.safe_load(ctx.layout.tuned_params.read_text())
    best = next(t for t in summary["trials"] if t["number"] == doc["best_trial"])
    assert doc["best_value"] == max(t["value"] for t in summary["trials"]) == best["value"]
    # Trial 0 is the baseline: params.yaml's own values under the same budget.
    baseline = next(t for t in summary["trials"] if t["number"] == 0)
    assert baseline["params"] == current_values(ctx.params)
    assert doc["baseline_value"] == baseline["value"] <= doc["best_value"]
    # Confirmation: the baseline and the best searched trial (tune.confirm_top 1) at the full
    # budget; the written values are those of the better one on validation data.
    top = max((t for t in summary["trials"] if t["number"] != 0), key=lambda t: t["value"])
    assert [(r["candidate"], r["trial"]) for r in doc["confirmed"]] == [
        ("baseline", 0),
        (f"trial-{top['number']}", top["number"]),
    ]
    assert [r["budget_value"] for r in doc["confirmed"]] == [baseline["value"], top["value"]]
    chosen = next(r for r in summary["confirmed"] if r["candidate"] == doc["selected"])
    assert doc["selected_value"] == chosen["value"] == max(r["value"] for r in summary["confirmed"])
    for name, value in chosen["values"].items():
        section, key, _ = SPACE[name]
        assert doc["values"][section][key] == value
    client, parent, children = _runs(root, study_name(ctx.params))
    assert parent.info.status == "FINISHED" and parent.data.metrics["best_value"] == doc["best_value"]
    assert parent.data.metrics["selected_value"] == doc["selected_value"]
    confirms = [c for c in children if "recraft.confirm" in c.data.tags]
    assert sorted(c.data.tags["recraft.confirm"] for c in confirms) == sorted(r["candidate"] for r in doc["confirmed"])
    for c in confirms:
        row = next(r for r in summary["confirmed"] if r["candidate"] == c.data.tags["recraft.confirm"])
        assert c.data.metrics["val/accuracy"] == row["val/accuracy"] and c.data.tags["state"] == "complete"
    children = [c for c in children if "recraft.trial" in c.data.tags]
    assert sorted(int(c.data.tags["recraft.trial"]) for c in children) == [0, 1, 2]
    for child in children:
        assert child.data.tags["state"] == "complete"
        assert "val/accuracy" in child.data.metrics and "lambda_fa" in child.data.params
        assert len(client.get_metric_history(child.info.run_id, "intermediate")) == 2  # one per fit epoch
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert plots == {"plots/history.png", "plots/importance.png", "plots/parallel.png"}

    # The round trip: with use_tuned, align and fit see the tuned values.
    from flows.pipeline import _stage_context

    tuned = _stage_context("align", _context(workspace, {"use_tuned": True}))
    assert tuned.params.align.lambda_fa == doc["values"]["align"]["lambda_fa"]
    assert tuned.params.fit.lr == doc["values"]["fit"]["lr"]


def test_confirmation_measures_what_the_pipeline_then_reports(workspace, tmp_path, monkeypatch):
    """The searched candidate's full-budget numbers are the pipeline's own: its values run through
    align, fit and evaluate give the same val/* (CPU runs are deterministic). Confirmations are
    kept in the study, so a rerun does not repeat them."""
    import shutil

    from flows import tune as tune_mod
    from flows.pipeline import make_context, pipeline
    from flows.stages.tune import tune as tune_stage

    root, settings, _ = workspace
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ctx = _context(workspace, {"tune.n_trials": 2, "tune.sampler_seed": 5, "tune.pruner": "none"})
    summary = tune_stage(ctx, search=True, storage_url=storage)
    row = summary["confirmed"][1]
    assert row["candidate"] == "trial-1" and row["budget_value"] == summary["trials"][1]["value"]

    ws = tmp_path / "ws"
    shutil.copytree(root / "ws", ws)
    result = pipeline(make_context(tune_mod._params_of(ctx.params, row["values"]), settings, ws), start="align")
    assert result["val/accuracy"] == row["val/accuracy"]
    assert result["val/loss"] == pytest.approx(row["val/loss"], rel=1e-6, abs=1e-7)

    calls = []
    monkeypatch.setattr(tune_mod, "run_trial", lambda *a, **k: calls.append(a) or {})
    again = tune_stage(ctx, search=True, storage_url=storage)
    assert calls == [] and again["confirmed"] == summary["confirmed"]
    # Another thread count sums in another order: its confirmations are measured anew.
    import torch

    monkeypatch.setattr(torch, "get_num_threads", lambda: 97)
    monkeypatch.setattr(tune_mod, "run_trial", lambda *a, **k: calls.append(a) or {"value": 0.5})
    other = tune_stage(ctx, search=True, storage_url=storage)
    assert len(calls) == 2 and [r["value"] for r in other["confirmed"]] == [0.5, 0.5]


def test_tuning_on_the_bound_minimises_the_bound_value(workspace, tmp_path):
    """``tune.target: bound``: every trial's value is its bound (fit + L * FA + FLD), the study
    minimises it, and the confirmation selects the smallest full-budget bound."""
    from flows.search_space import study_name
    from flows.stages.tune import tune as tune_stage

    overrides = {"tune.n_trials": 2, "tune.sampler_seed": 6, "tune.target": "bound", "tune.pruner": "none"}
    ctx = _context(workspace, overrides)
    summary = tune_stage(ctx, search=True, storage_url=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert summary["direction"] == "minimize" and summary["target"] == "bound"
    values = {t["number"]: t["value"] for t in summary["trials"]}
    _, _, children = _runs(workspace[0], study_name(ctx.params))
    trials = [c for c in children if "recraft.trial" in c.data.tags]
    assert len(trials) == 2
    for child in trials:
        m = child.data.metrics
        assert m["value"] == pytest.approx(values[int(child.data.tags["recraft.trial"])])
        assert m["value"] == m["bound/value"]
        assert m["bound/value"] == pytest.approx(m["bound/fit"] + m["bound/lipschitz"] * m["bound/w"] + m["bound/fld"])
    assert summary["best_value"] == min(values.values())
    assert all(r["value"] == r["bound/value"] for r in summary["confirmed"])
    assert summary["selected_value"] == min(r["value"] for r in summary["confirmed"])


def test_the_selection_keeps_the_baseline_unless_a_candidate_beats_it():
    from flows.tune import _select

    rows = [{"candidate": "baseline", "value": 0.8}, {"candidate": "trial-3", "value": 0.8}]
    assert _select(rows, maximize=True)["candidate"] == "baseline"  # a tie keeps params.yaml
    rows[1]["value"] = 0.81
    assert _select(rows, maximize=True)["candidate"] == "trial-3"
    assert _select(rows, maximize=False)["candidate"] == "baseline"


def test_a_pruned_trial_is_recorded_as_pruned(workspace, tmp_path, monkeypatch):
    import optuna

    from flows.search_space import study_name
    from flows.stages.tune import tune as tune_stage

    # Trial 1 is told to stop after its first epoch; what matters here is how we record it.
    monkeypatch.setattr(optuna.trial.Trial, "should_prune", lambda self: self.number == 1)
    ctx = _context(workspace, {"tune.n_trials": 2, "tune.sampler_seed": 2, "tune.confirm_top": 0})
    summary = tune_stage(ctx, search=True, storage_url=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = {t["number"]: t["state"] for t in summary["trials"]}
    assert states == {0: "complete", 1: "pruned"}
    client, _, children = _runs(workspace[0], study_name(ctx.params))
    pruned = next(c for c in children if c.data.tags.get("recraft.trial") == "1")
    assert pruned.data.tags["state"] == "pruned" and pruned.info.status == "KILLED"
    assert len(client.get_metric_history(pruned.info.run_id, "intermediate")) == 1


def test_an_interrupted_study_resumes_and_keeps_its_trials(workspace, tmp_path):
    import optuna

    from flows.stages.tune import tune as tune_stage
    from flows.tune import _open_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    ctx = _context(workspace, {"tune.n_trials": 2, "tune.sampler_seed": 3, "tune.confirm_top": 0})
    first = tune_stage(ctx, search=True, storage_url=storage)
    # A worker killed mid-trial leaves a RUNNING trial behind.
    _open_study(ctx.params, storage, "maximize").ask()
    ctx = _context(
        workspace, {"tune.n_trials": 3, "tune.sampler_seed": 3, "tune.confirm_top": 0}
    )  # same study, one more trial
    second = tune_stage(ctx, search=True, storage_url=storage)
    kept = {t["number"]: t["value"] for t in first["trials"]}
    again = {t["number"]: t["value"] for t in second["trials"] if t["number"] in kept}
    assert again == kept
    assert second["n_complete"] == 3 and second["n_trials"] == 4  # 2 kept + 1 interrupted + 1 new
    states = [t.state for t in _open_study(ctx.params, storage, "maximize").get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3


def test_two_workers_on_sqlite_neither_lose_nor_duplicate_trials(workspace, tmp_path):
    from flows.search_space import study_name, tuned_sections
    from flows.stages.tune import tune as tune_stage

    overrides = {"tune.n_trials": 4, "tune.n_workers": 2, "tune.sampler_seed": 4, "tune.confirm_top": 0}
    ctx = _context(workspace, overrides)
    summary = tune_stage(ctx, search=True, storage_url=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert sorted(t["number"] for t in summary["trials"]) == [0, 1, 2, 3]
    assert summary["n_complete"] == 4
    # Without confirmation the budgeted best is written as it is.
    doc = yaml.safe_load(ctx.layout.tuned_params.read_text())
    assert doc["selected"] == f"trial-{summary['best_trial']}" and doc["confirmed"] == []
    assert doc["values"] == tuned_sections(summary["best_params"])
    _, _, children = _runs(workspace[0], study_name(ctx.params))
    assert sorted(int(c.data.tags["recraft.trial"]) for c in children) == [0, 1, 2, 3]
    assert len({tuple(sorted(t["params"].items())) for t in summary["trials"]}) == 4  # workers sample apart


def test_the_test_split_is_not_read_before_evaluation(workspace, tmp_path):
    """A sentinel: test.npz replaced by a directory, which every read fails on, while tune (a real
    search), align and fit run; evaluate then reads the real file."""
    import shutil

    from flows.pipeline import make_context, pipeline
    from flows.search_space import with_values

    root, settings, params = workspace
    ws = tmp_path / "ws"
    shutil.copytree(root / "ws", ws)
    test_file = ws / "data" / "prepared" / "test.npz"
    real = test_file.read_bytes()
    test_file.unlink()
    test_file.mkdir()
    ctx = make_context(with_values(params, {"use_tuned": True, "tune.n_trials": 1}), settings, ws)
    pipeline(ctx, start="tune", stop="fit")
    assert (ws / "params.tuned.yaml").exists() and (ws / "models" / "model").exists()
    test_file.rmdir()
    test_file.write_bytes(real)
    result = pipeline(ctx, start="evaluate")
    assert 0.0 <= result["test/accuracy"] <= 1.0
    # One trial: only the baseline is confirmed, and it is what the pipeline reports.
    tuned = json.loads((ws / "metrics" / "tune.json").read_text())
    assert tuned["selected"] == "baseline" and [r["candidate"] for r in tuned["confirmed"]] == ["baseline"]
    assert result["val/accuracy"] == tuned["confirmed"][0]["val/accuracy"] == tuned["selected_value"]


def test_recraft_tune_continues_in_a_prepared_workspace(workspace, tmp_path, monkeypatch):
    """The CLI: stages 0-source are reused (same params), the study runs, the table and the
    round-trip hint are printed; bad input exits 2 before anything runs."""
    from typer.testing import CliRunner

    from flows.cli import app

    root, settings, _ = workspace
    for key in ("tracking_uri", "artifact_location", "wheel_cache", "device", "checkpoint_every"):
        monkeypatch.setenv(f"RECRAFT_{key.upper()}", str(getattr(settings, key)))
    ws = root / "ws"
    args = ["tune", "--trials", "1", "--workdir", str(ws), "--storage", f"sqlite:///{tmp_path / 'cli.db'}"]
    for override in TUNE:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "complete" in result.output and "--set use_tuned=true" in result.output
    assert "confirmed at the full budget" in result.output and "baseline *" in result.output
    assert yaml.safe_load((ws / "params.tuned.yaml").read_text())["best_trial"] == 0

    bad = CliRunner().invoke(app, ["tune", "--workdir", str(tmp_path / "x"), "--set", "tune.pruner=sometimes"])
    assert bad.exit_code == 2 and "tune.pruner" in bad.output
    assert not (tmp_path / "x").exists()
