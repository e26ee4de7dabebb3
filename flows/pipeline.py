"""The whole pipeline as one Prefect flow (``recraft run``), and single stages (``dvc repro``)."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import replace
from pathlib import Path

import yaml
from prefect import flow
from prefect import tags as prefect_tags

from components.atomic import recover, write_json
from components.config import Params
from components.errors import UserError
from components.faults import fault_point
from components.layout import ORDER
from components.tasks import get_task
from components.wheels import sha256_file
from flows.lock import workspace_lock
from flows.settings import parent_tags
from flows.stages import StageContext, make_context, stage_flow

__all__ = ["pipeline", "run_stage", "make_context", "finished_stages", "stage_fingerprint", "stage_params"]

TUNED_STAGES = ("align", "fit", "evaluate")


def _stage_context(name: str, ctx: StageContext) -> StageContext:
    """With ``use_tuned: true``, the stages after ``tune`` see the best values of its search."""
    if not ctx.params.use_tuned or name not in TUNED_STAGES:
        return ctx
    from flows.search_space import apply_tuned

    return replace(ctx, params=apply_tuned(ctx.params, ctx.layout.tuned_params))


def run_stage(name: str, ctx: StageContext) -> dict:
    """Run one stage's flow (``recraft stage NAME``, as ``dvc.yaml`` calls it).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) only ``fit`` runs, data-parallel: rank 0 runs the
    stage's flow (tracking, outputs), the other ranks train their shards silently. With
    ``RECRAFT_PARENT_FLOW_RUN`` set (:func:`flows.deploy.reproduce` sets it), the stage's flow
    run is tagged ``parent-flow-run:<id>``.
    """

    with prefect_tags(*parent_tags()):  # the scheduled flow run that started this dvc run, if any
        return _run_stage(name, ctx)


def _run_stage(name: str, ctx: StageContext) -> dict:
    from components.distributed import init_from_env, shutdown, world_size_from_env

    if world_size_from_env() <= 1:
        return stage_flow(name)(_stage_context(name, ctx))
    if name != "fit":
        raise UserError(f"only the fit stage runs under torchrun; run {name!r} as a single process")
    world, device = init_from_env(ctx.device)
    ctx = replace(_stage_context(name, ctx), device=device)
    try:
        if world.main:
            result = stage_flow(name)(ctx)
        else:
            from flows.stages.fit import fit_replica

            fit_replica(ctx)
            result = {}
    except BaseException:
        shutdown(wait=False)  # torchrun stops the other ranks when this one exits non-zero
        raise
    shutdown()
    return result


def stage_params() -> dict[str, tuple[str, ...]]:
    """The params each stage reads, as the project's ``dvc.yaml`` lists them (read once; the one
    place these lists exist): a finished stage is reused as long as these, and every stage before
    it, are unchanged, under ``recraft run`` as under ``dvc repro``.

    Raises:
        UserError: ``dvc.yaml`` is missing next to the code, or lacks a stage or its params.
    """
    if not _STAGE_PARAMS:
        path = Path(__file__).resolve().parent.parent / "dvc.yaml"
        try:
            stages = yaml.safe_load(path.read_text())["stages"]
            for name in ORDER:  # params.tuned.yaml entries (a file's keys) are not params.yaml's
                _STAGE_PARAMS[name] = tuple(p for p in stages[name].get("params", []) if isinstance(p, str))
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
            _STAGE_PARAMS.clear()
            raise UserError(
                f"{path}: cannot read the params of every stage ({type(exc).__name__}: {exc})",
                hint="the code runs from a checkout of the project, with its dvc.yaml beside flows/",
            ) from exc
    return dict(_STAGE_PARAMS)


_STAGE_PARAMS: dict[str, tuple[str, ...]] = {}
# The stages that read a user's data file (``npz:PATH``, ``pdebench:PATH``): its content is
# part of their fingerprint, so editing the file in place re-runs the pipeline from ``assets``.
DATA_STAGES = ("assets", "prepare")

# sha256 of user data files by (path, inode, size, mtime_ns): hashed once per process, however
# often the fingerprints are asked for.
_DIGESTS: dict[tuple[str, int, int, int], str] = {}


def _file_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _DIGESTS:
        return _DIGESTS[key]
    digest = sha256_file(path)
    # File times tick coarsely (milliseconds): a file modified just now could change again
    # without its key changing, so only a file left alone for a while is remembered.
    if time.time_ns() - st.st_mtime_ns > 2_000_000_000:
        _DIGESTS[key] = digest
    return digest


def stage_fingerprint(params: Params, stage: str) -> str:
    """sha256 of what ``stage`` reads besides earlier stages' outputs: its params and, for
    :data:`DATA_STAGES`, the content of a user's data file."""
    raw = params.model_dump(mode="json")
    picked = {}
    # Without use_tuned the tune stage searches nothing, so no other param changes its output.
    keys = ("use_tuned",) if stage == "tune" and not params.use_tuned else stage_params()[stage]
    for key in keys:
        section, _, name = key.partition(".")
        picked[key] = raw[section][name] if name else raw[section]
    if stage in DATA_STAGES:
        user_file = get_task(params.task).user_file
        if user_file is not None:  # registered tasks: pinned assets, already named by ``task``
            picked["data_sha256"] = _file_digest(user_file)
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()


def finished_stages(ctx: StageContext, stages: tuple[str, ...] = ORDER) -> tuple[str, ...]:
    """The leading ``stages`` that already finished in this workspace on the same params and data."""
    done = []
    for name in stages:
        marker = ctx.layout.done_marker(name)
        try:
            if json.loads(marker.read_text()).get("fingerprint") != stage_fingerprint(ctx.params, name):
                break
        except (OSError, json.JSONDecodeError):
            break
        done.append(name)
    return tuple(done)


def pipeline(ctx: StageContext, start: str = "assets", stop: str = "evaluate") -> dict:
    """assets -> prepare -> source -> tune -> align -> fit -> evaluate, in one process and one flow run.

    ``tune`` searches only with ``use_tuned: true``; otherwise it records that nothing was searched.

    Re-running in the same workspace resumes: the leading stages that finished under the same
    params (and the same content of a user's data file) are skipped (each finished stage leaves
    a marker with their fingerprint), and align and fit continue from their last checkpoint.
    One run at a time holds the workspace (:func:`flows.lock.workspace_lock`); it first cleans
    up what a killed run's atomic writes left behind (:func:`components.atomic.recover`).

    Args:
        start: skip the stages before this one (their outputs must already be in the workspace).
        stop: the last stage to run (``recraft tune`` stops after ``source``).

    Raises:
        UserError: another run holds the workspace (checked before any flow run starts).
    """
    with workspace_lock(ctx.layout.lock_file):
        for directory in ctx.layout.written_dirs:
            recover(directory)
        return _pipeline(ctx, start, stop)


@flow(name="recraft-pipeline")
def _pipeline(ctx: StageContext, start: str, stop: str) -> dict:
    """:func:`pipeline`'s flow run, with the workspace held."""
    stages = ORDER[ORDER.index(start) : ORDER.index(stop) + 1]
    done = finished_stages(ctx, stages)
    result = json.loads(ctx.layout.metrics(stages[-1]).read_text()) if stages[-1] in done else {}
    for name in stages[len(done) :]:
        marker = ctx.layout.done_marker(name)
        marker.unlink(missing_ok=True)
        # Taken before the stage reads anything: a data file edited while it runs re-runs it next time.
        fingerprint = stage_fingerprint(ctx.params, name)
        fault_point(name, "start")  # test-only (components.faults)
        result = stage_flow(name)(_stage_context(name, ctx))
        write_json(marker, {"fingerprint": fingerprint, "stage": name})
    return result
