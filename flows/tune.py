"""Optuna searches the stage-1/2 coefficients on validation data (``tune`` stage, ``recraft tune``).

A trial runs stage 1 and stage 2 with the same component functions as the pipeline, on the
prepared splits and the stage-0 outputs already in the workspace, under a per-trial budget
(``tune.max_train`` samples, ``tune.fit_epochs`` epochs), and returns the validation metric
(or, with ``tune.target: bound``, the bound value; the test split is never read). Each fit epoch
reports to the pruner. The study lives in an RDB storage (SQLite by default, PostgreSQL for
shared workers); rerunning with the same params continues it, keeping its finished trials.
MLflow gets one parent run per study and a child run per trial. The best values are written to
``params.tuned.yaml``, which the pipeline reads when ``use_tuned: true``.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from components.config import Params
from components.errors import UserError
from flows.params import flatten, parse_params
from flows.search_space import SPACE, current_values, study_name, suggest, tuned_sections, with_values
from flows.settings import Settings, redact
from flows.stages.context import StageContext, make_context
from flows.tracking.runs import runtime_tags

__all__ = ["run_trial", "confirm", "run_search", "default_storage"]


def _budget(params: Params) -> Params:
    """Per-trial stage-2 budget: ``tune.fit_epochs`` epochs, no step floor."""
    return with_values(params, {"fit.epochs": params.tune.fit_epochs, "fit.min_steps": 0})


def run_trial(
    ctx: StageContext, params: Params, report: Callable[[int, float], None], full: bool = False
) -> dict[str, float]:
    """Stage 1 + stage 2 under ``params`` on the workspace's prepared data; validation results only.

    Both stages start from :func:`components.recipe.new_embedder` and
    :func:`components.recipe.new_model` and train with the recipe the stages call, so with
    ``full`` (all training data, the params' own fit epochs; tune's confirmation) a trial
    reproduces what the pipeline's align, fit and evaluate report as ``val/*`` with ``params``,
    number for number on CPU. Without it the trial runs under the per-trial budget
    (``tune.max_train`` samples, ``tune.fit_epochs`` epochs).

    Args:
        report: called after each fit epoch with the value the study optimises so far.
        full: the full budget, and the workspace's stage-0 outputs even when ``source.tau`` differs.

    Returns:
        ``val/<metric>`` for each metric, ``bound/*`` when the target is the bound, ``value``.
    """
    from components import recipe
    from components.align_loop import AlignReference
    from components.data import load_split, subsample
    from components.metrics import compute_metrics
    from components.training import predict_scores

    if not full:
        params = _budget(params)
    job = replace(ctx.job, params=params)
    meta = recipe.load_meta(ctx.layout)
    train = load_split(ctx.layout.prepared_dir / "train.npz")
    if not full:
        train = subsample(train, params.tune.max_train, np.random.default_rng(params.seed))
    val = load_split(ctx.layout.prepared_dir / "val.npz")
    embedder, body, _, ref = recipe.new_embedder(job, meta)
    if not full and params.source.tau != ctx.params.source.tau:  # tau is searched: stage 0 again
        out = recipe.train_source(job)
        ref = AlignReference(out["cloud"], out["head"], out["labels"])
    if recipe.aligns(params):
        recipe.align(job, embedder, body, ref, train)
    state = {k: v.detach().cpu().clone() for k, v in embedder.state_dict().items()}
    del embedder, body
    model = recipe.new_model(job, meta, train, val, state)
    metric = meta.metric
    # With the bound as target, the per-epoch report is its validation-loss term (lower is better).
    watched = f"val_{metric}" if params.tune.target == "val" else "val_loss"
    model, _ = recipe.fit(
        job, model, train, val, meta, None, on_epoch=lambda epoch, record: report(epoch, record[watched])
    )
    model.to(ctx.device).eval()
    scores = predict_scores(model, val.x, ctx.device, mask=val.mask)
    std = recipe.target_std(meta)
    result = {f"val/{k}": v for k, v in compute_metrics(meta.task_type, scores, val.y, std).items()}
    if params.tune.target == "bound":
        result.update(recipe.bound_terms(job, model, val, meta, scores))
        result["value"] = result["bound/value"]
    else:
        result["value"] = result[f"val/{metric}"]
    return result


def _params_of(params: Params, values: dict[str, Any]) -> Params:
    """``params`` with a trial's searched values (Optuna names, as in :data:`SPACE`)."""
    return with_values(params, {f"{SPACE[name][0]}.{SPACE[name][1]}": v for name, v in values.items()})


def confirm(ctx: StageContext, study, parent_id: str) -> list[dict[str, Any]]:
    """Re-run the baseline and the ``tune.confirm_top`` best searched trials at the full budget.

    A ranking under the per-trial budget need not hold on all the data, so the values written to
    ``params.tuned.yaml`` are the best of these full-budget runs on validation data, and the
    baseline (``params.yaml`` as it is) stays when nothing beats it. Each run reproduces the
    pipeline's own ``val/*`` (see :func:`run_trial`). Results are kept in the study's user
    attributes, keyed by device, torch version and thread count, so a rerun (or another machine on
    the same study) with the same runtime does not repeat them.

    Returns:
        One row per candidate, baseline first: ``candidate``, ``trial``, ``budget_value``,
        ``values`` (searched names) and the full-budget results (``value``, ``val/*``).
    """
    from optuna.study import StudyDirection
    from optuna.trial import TrialState

    params = ctx.params
    base = current_values(params)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    searched = [t for t in complete if t.params != base]
    searched.sort(key=lambda t: t.value, reverse=study.direction == StudyDirection.MAXIMIZE)
    baseline_trial = next((t for t in complete if t.params == base), None)
    candidates = [("baseline", baseline_trial, base)]
    candidates += [(f"trial-{t.number}", t, dict(t.params)) for t in searched[: params.tune.confirm_top]]
    tracker = ctx.tracker()
    # The numbers hold for one device, torch build and thread count (float summation order).
    tags = runtime_tags()
    runtime = f"{ctx.device.type}-torch{tags['recraft.torch']}-{tags['recraft.torch_threads']}threads"
    rows = []
    for key, trial, values in candidates:
        attr = f"confirm/{key}@{runtime}"
        result = study.user_attrs.get(attr)
        if result is None:
            run = tracker.trial_run(parent_id, f"confirm-{key}", values, {**ctx.tags, "recraft.confirm": key})
            result = _tracked(run, ctx, _params_of(params, values), _logger(run), full=True)
            study.set_user_attr(attr, result)
        rows.append(
            {
                "candidate": key,
                "trial": None if trial is None else trial.number,
                "budget_value": None if trial is None else trial.value,
                "values": values,
                **result,
            }
        )
    return rows


def _tracked(run, *args, **kwargs) -> dict[str, Any]:
    """:func:`run_trial` in its MLflow child ``run``: float results logged, state tagged complete,
    pruned (run KILLED) or failed, and the run ended either way."""
    import optuna

    try:
        result = run_trial(*args, **kwargs)
    except optuna.TrialPruned:
        run.tags({"state": "pruned"})
        run.end("KILLED")
        raise
    except BaseException:
        run.tags({"state": "failed"})
        run.end("FAILED")
        raise
    run.metrics({k: v for k, v in result.items() if isinstance(v, float)})
    run.tags({"state": "complete"})
    run.end()
    return result


def _logger(run) -> Callable[[int, float], None]:
    """A ``report`` callback that only logs the per-epoch value to ``run`` (no pruning)."""
    return lambda epoch, value: run.metrics({"intermediate": value}, step=epoch)


def _select(rows: list[dict[str, Any]], maximize: bool) -> dict[str, Any]:
    """The confirmed candidate with the best full-budget value; the baseline (first) wins ties."""
    best = rows[0]
    for row in rows[1:]:
        if (row["value"] > best["value"]) if maximize else (row["value"] < best["value"]):
            best = row
    return best


def _storage(url: str):
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI prints the study itself
    # Heartbeats let a rerun tell a trial whose process was killed (stale) from a running one.
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return optuna.storages.RDBStorage(url, heartbeat_interval=20, grace_period=60, engine_kwargs=kwargs)
        except Exception as exc:  # sqlalchemy raises many types for a bad URL or an unreachable server
            raise UserError(
                f"cannot open the Optuna storage {redact(url)}: "
                f"{(redact(str(exc)).splitlines() or [type(exc).__name__])[0][:200]}",
                hint="check --storage / RECRAFT_OPTUNA_STORAGE "
                "(e.g. sqlite:///optuna.db or postgresql+psycopg2://USER@HOST/DB)",
            ) from exc


def _open_study(params: Params, storage_url: str, direction: str, worker: int = 0):
    import optuna

    tp = params.tune
    pruner = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=tp.fit_epochs),
        "none": optuna.pruners.NopPruner,
    }[tp.pruner]()
    sampler = optuna.samplers.TPESampler(seed=tp.sampler_seed + worker, n_startup_trials=4)
    return optuna.create_study(
        study_name=study_name(params),
        storage=_storage(storage_url),
        direction=direction,
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def _direction(ctx: StageContext, params: Params) -> str:
    from components.recipe import load_meta

    meta = load_meta(ctx.layout)
    if params.tune.target == "bound":
        return "minimize"
    return "maximize" if meta.higher_is_better else "minimize"


def _worker(params_json: str, settings_json: str, root: str, storage_url: str, parent_id: str, n: int, worker: int):
    """One process's share of the trials (``tune.n_workers`` > 1); also the in-process path."""
    from flows.settings import configure_prefect

    configure_prefect()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the CLI reports progress itself
    params = parse_params(json.loads(params_json))
    settings = Settings.model_validate_json(settings_json)
    ctx = make_context(params, settings, Path(root))
    study = _open_study(params, storage_url, _direction(ctx, params), worker)
    tracker = ctx.tracker()

    def objective(trial) -> float:
        import optuna

        trial_params = suggest(trial, params)
        run = tracker.trial_run(
            parent_id, f"trial-{trial.number}", dict(trial.params), {**ctx.tags, "recraft.trial": str(trial.number)}
        )

        def report(epoch: int, value: float) -> None:
            run.metrics({"intermediate": value}, step=epoch)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch}")

        return _tracked(run, ctx, trial_params, report)["value"]

    study.optimize(objective, n_trials=n, gc_after_trial=True)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))


def run_search(ctx: StageContext, storage_url: str | None = None) -> dict:
    """Run (or continue) the study up to ``tune.n_trials`` finished trials; write the best values.

    Needs the workspace's prepared data and stage-0 outputs. Returns the summary written to
    ``metrics/tune.json``.
    """
    from flows import tune_report

    params = ctx.params
    storage_url = storage_url or default_storage(ctx.settings, ctx.layout.root)
    study = _open_study(params, storage_url, _direction(ctx, params))
    if not study.trials:
        # Trial 0 of a new study measures params.yaml as it is, under the same budget: the
        # search replaces those values only with ones that beat them on validation data.
        study.enqueue_trial(current_values(params), user_attrs={"baseline": True}, skip_if_exists=True)
    tracker = ctx.tracker()
    parent_id = tracker.study_run(study.study_name, flatten(params), ctx.tags)
    _run_trials(ctx, max(0, params.tune.n_trials - _finished(study)), storage_url, parent_id)
    study = _open_study(params, storage_url, _direction(ctx, params))
    summary = tune_report.summarise(study, storage_url, params)
    shutil.rmtree(ctx.layout.plot("tune"), ignore_errors=True)  # only this study's figures
    if summary["best_value"] is None:
        raise RuntimeError(f"study {study.study_name} has no completed trial; rerun to continue it")
    baseline = [t for t in study.trials if t.user_attrs.get("baseline") and t.value is not None]
    summary["baseline_value"] = baseline[0].value if baseline else None
    if params.tune.confirm_top:
        summary["confirmed"] = confirm(ctx, study, parent_id)
        chosen = _select(summary["confirmed"], summary["direction"] == "maximize")
        summary["selected"], summary["selected_value"] = chosen["candidate"], chosen["value"]
        values = chosen["values"]
    else:  # the budgeted best, unconfirmed
        summary |= {"confirmed": [], "selected": f"trial-{summary['best_trial']}", "selected_value": None}
        values = summary["best_params"]
    _write_tuned(ctx, study.study_name, storage_url, summary, values)
    run = tracker.run(parent_id)
    for path in tune_report.figures(study, ctx.layout.plot("tune")):
        run.artifact(path, "plots")
    scores = {"best_value": summary["best_value"], "n_complete": summary["n_complete"]}
    if summary["selected_value"] is not None:
        scores |= {"selected_value": summary["selected_value"], "baseline_full_value": summary["confirmed"][0]["value"]}
    run.metrics(scores)
    run.tags({"recraft.selected": summary["selected"]})
    run.artifact(ctx.layout.tuned_params)
    run.end()
    return summary


def _run_trials(ctx: StageContext, todo: int, storage_url: str, parent_id: str) -> None:
    """``todo`` more trials, shared among ``tune.n_workers`` processes (one: in this process)."""
    params = ctx.params
    workers = min(params.tune.n_workers, todo) or 1
    shares = [todo // workers + (i < todo % workers) for i in range(workers)]
    settings = ctx.settings.model_dump_json(context={"include_secrets": True})  # a plain dump masks passwords
    args = (params.model_dump_json(), settings, str(ctx.layout.root), storage_url, parent_id)
    if workers == 1:
        if todo:
            _worker(*args, todo, 0)
        return
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker, args=(*args, n, i)) for i, n in enumerate(shares)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    if any(p.exitcode for p in procs):
        raise RuntimeError(f"tune workers exited with {[p.exitcode for p in procs]}; rerun to continue the study")


def _write_tuned(ctx: StageContext, study_name: str, storage_url: str, summary: dict, values: dict) -> None:
    """``params.tuned.yaml``: the selected values and how they were chosen (the store without its password)."""
    from components.atomic import write_text

    doc = {
        "study": study_name,
        "storage": redact(storage_url),
        "target": ctx.params.tune.target,
        "best_value": summary["best_value"],
        "best_trial": summary["best_trial"],
        "baseline_value": summary["baseline_value"],
        "selected": summary["selected"],
        "selected_value": summary["selected_value"],
        "confirmed": [
            {k: row[k] for k in ("candidate", "trial", "budget_value", "value")} for row in summary["confirmed"]
        ],
        "values": tuned_sections(values),
    }
    header = (
        "# Written by the tune stage (recraft tune); align, fit and evaluate read it when use_tuned: true.\n"
        "# values: the selected candidate, the best on validation data of the baseline and the top\n"
        "# tune.confirm_top trials re-run at the full budget (best_*: the search under its per-trial budget).\n"
        "# A searched source.tau is recorded only: stage 0 runs before tune, so copy it into params.yaml.\n"
    )
    write_text(ctx.layout.tuned_params, header + yaml.safe_dump(doc, sort_keys=False))


def default_storage(settings: Settings, root: Path) -> str:
    """``RECRAFT_OPTUNA_STORAGE``, else an embedded SQLite file in the workspace."""
    return settings.optuna_storage or f"sqlite:///{Path(root).resolve() / 'optuna.db'}"
