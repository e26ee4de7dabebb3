"""The scheduled pipeline: ``dvc pull``, ``dvc exp run``, ``dvc push`` as one Prefect flow.

A team runs the pipeline on a schedule from a project checkout: a process worker's checkout
(``prefect.yaml`` sets the working directory), a fresh clone in a Kubernetes job, or the checkout
``recraft serve`` was started in. The flow runs in that checkout's root:

1. ``dvc pull`` restores the outputs recorded in ``dvc.lock`` from the DVC remote, so only what
   changed is recomputed.
2. ``dvc exp run --set-param task=... --set-param method=...`` runs the stages exactly as
   ``dvc repro`` does (each stage is ``recraft stage NAME``, against the same Prefect server),
   then records the run as a DVC experiment: a git commit under ``refs/exps`` holding its
   ``params.yaml``, ``dvc.lock`` and metrics. The run's results are also applied to the
   workspace, as after ``dvc repro``. A plain ``dvc repro`` after editing params would leave no
   record once the next scheduled run rewrote them.
3. ``dvc push`` uploads the new outputs; with ``git_remote`` the experiment's commit is pushed
   too (``dvc exp push``), so ``dvc exp show`` lists it for everyone.

Pull and push are retried with exponential backoff (network I/O); a misconfiguration (no remote,
no git identity, a bad param) fails at once with a message saying what to fix.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from prefect import flow, task
from prefect import runtime as prefect_runtime
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from pydantic import StringConstraints

# Project imports stay at module level: a worker loads this file from the checkout with the
# checkout on sys.path only while loading, so later imports could find another installed copy.
from components.errors import UserError
from components.tasks import task_slug
from flows.dvc_remote import pull_outputs, push_outputs, share_experiment
from flows.params import load_params
from flows.prefect_local import local_prefect_server
from flows.settings import PARENT_FLOW_RUN, redact

__all__ = [
    "DEFAULT_CRON",
    "scheduled_pipeline",
    "reproduce",
    "stage_flow_runs",
    "check_parameters",
    "serve",
]

DEFAULT_CRON = "0 3 * * *"  # 03:00 every day
_DEFAULT_TASK, _DEFAULT_METHOD = "dna", "recraft"
_OUTPUT_TAIL = 40  # lines of `dvc exp run` output kept for the error message

# An override is `section.key=value`, nothing else. The flow's parameter schema carries this
# pattern, so a Prefect server refuses any other string before it creates a run; in particular
# DVC's `FILE:key=value`, which would let a run's parameters rewrite dvc.yaml (its commands).
# Keys and values are checked against the params schema by `check_parameters`.
Override = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=")]


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called as a plain function (tests, scripts)
        return logging.getLogger(__name__)


@contextmanager
def _prefect_api(root: Path) -> Iterator[dict[str, str]]:
    """The environment for the stage processes: the Prefect server this flow run reports to.

    Under a worker or ``serve`` the API URL is known and every stage reports to the same server
    (so ``gpu`` tag limits apply across them). Run without a server, one local server is started
    for all stages, as ``recraft repro`` does.
    """
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        yield {**os.environ, "PREFECT_API_URL": str(url)}
        return
    with local_prefect_server(root / ".prefect" / "server.log") as local:
        yield {**os.environ, "PREFECT_API_URL": local}


@task(name="dvc-exp-run", cache_policy=NO_CACHE)
def reproduce(root: str, set_params: list[str], name: str) -> str:
    """``dvc exp run --set-param P ... --name NAME``: ``dvc repro`` with overrides, kept as an experiment.

    Not retried: a stage that failed would fail again, and DVC resumes what finished anyway.

    Raises:
        RuntimeError: ``dvc exp run`` failed; the message ends with its last lines of output.
    """
    cmd = [str(Path(sys.executable).with_name("dvc")), "exp", "run", "--name", name]
    for item in set_params:
        cmd += ["--set-param", item]
    with _prefect_api(Path(root)) as env:
        # The checkout's own code first: what DVC hashes as a stage's dependency is what runs,
        # even where an image installed another copy of the package.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        if flow_run_id := prefect_runtime.flow_run.id:  # the stages' flow runs carry it as a tag
            env[PARENT_FLOW_RUN] = flow_run_id
        _run_logged(cmd, root, env, "dvc exp run")
    return name


def stage_flow_runs(parent_id: str) -> list[dict[str, Any]]:
    """The flow runs of the stages a flow run started through DVC (tagged with its id), by start.

    Each is ``{"name", "flow", "id", "state", "url"}``; ``url`` is its page in the Prefect UI
    (None where the server has no UI address).
    """
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterId, FlowRunFilter, FlowRunFilterTags
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    tag = f"parent-flow-run:{parent_id}"
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])))
        flows = {
            f.id: f.name
            for f in client.read_flows(flow_filter=FlowFilter(id=FlowFilterId(any_=[r.flow_id for r in runs])))
        }
    runs = sorted(runs, key=lambda r: (r.start_time is None, r.start_time or r.created))
    return [
        {
            "name": r.name,
            "flow": flows.get(r.flow_id, ""),
            "id": str(r.id),
            "state": r.state.type.value if r.state else "UNKNOWN",
            "url": f"{str(ui).rstrip('/')}/runs/flow-run/{r.id}" if ui else None,
        }
        for r in runs
    ]


def _run_logged(cmd: list[str], cwd: str, env: dict[str, str], what: str) -> None:
    """Run ``cmd``, each line of its output to the run's log (which a Prefect server keeps).

    Lines are masked with :func:`flows.settings.redact` first: a stage that prints a store's
    URL (a failed connection, a traceback) must not put its password in the server's logs.

    Raises:
        RuntimeError: ``cmd`` failed; the message ends with its last lines of output (masked).
    """
    log = _logger()
    tail: deque[str] = deque(maxlen=_OUTPUT_TAIL)
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        line = redact(line)
        tail.append(line)
        log.info(line.rstrip())
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"{what} failed (exit {code}):\n{''.join(tail)}")


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


def _preflight(root: Path, set_params: list[str], git_remote: str | None = None) -> None:
    """What the run needs, checked before anything is pulled: a git commit to build on, a git
    identity for the experiment's commit, params that the stages will accept, and the git remote
    to share the experiment with (a configured name, or a URL or path).

    Raises:
        UserError: naming what is missing and how to fix it.
    """
    if _git(root, "rev-parse", "--verify", "HEAD").returncode != 0:
        raise UserError(
            f"{root} is not a git checkout with a commit: each scheduled run is recorded as a DVC "
            "experiment on top of HEAD",
            hint="run it in a clone of the project repository",
        )
    if _git(root, "var", "GIT_COMMITTER_IDENT").returncode != 0:
        raise UserError(
            "git has no identity for the experiment's commit",
            hint="git config --global user.name/user.email on the worker, or set GIT_AUTHOR_NAME, "
            "GIT_AUTHOR_EMAIL, GIT_COMMITTER_NAME and GIT_COMMITTER_EMAIL",
        )
    load_params(root / "params.yaml", set_params, complete=True)  # the key named in any error
    is_location = any(c in (git_remote or "") for c in "/:")
    if git_remote and not is_location and _git(root, "remote", "get-url", git_remote).returncode != 0:
        raise UserError(
            f"git remote {git_remote!r} is not configured in {root}", hint="git remote -v lists them; or give a URL"
        )


def _set_params(task: str, method: str, overrides: list[str] | None) -> list[str]:
    """What ``dvc exp run --set-param`` gets: the task, the method, then the overrides."""
    return [f"task={task}", f"method={method}", *(overrides or [])]


def check_parameters(root: Path, parameters: dict[str, Any]) -> None:
    """Validate a scheduled run's parameters against the params schema, as the run will use them:
    ``root/params.yaml`` with the task, the method and every override applied.

    Called when a deployment is served, so that a bad ``--set`` is refused before any run exists;
    each run checks again before it pulls (a deployment's parameters can be changed on the server).

    Raises:
        UserError: an override is not ``section.key=value``, or names an unknown key or a bad
            value (the message names the key), or ``root`` has no complete ``params.yaml``.
    """
    task, method = parameters.get("task", _DEFAULT_TASK), parameters.get("method", _DEFAULT_METHOD)
    load_params(root / "params.yaml", _set_params(task, method, parameters.get("overrides")), complete=True)


def _experiment_name(task: str, method: str) -> str:
    """``dna-recraft-20261129-030000``: unique per second, valid as a git ref name."""
    return f"{task_slug(task)}-{method}-{datetime.now(UTC):%Y%m%d-%H%M%S}"


@flow(name="recraft-scheduled-pipeline")
def scheduled_pipeline(
    task: str = _DEFAULT_TASK,
    method: str = _DEFAULT_METHOD,
    overrides: list[Override] | None = None,
    push: bool = True,
    remote: str | None = None,
    git_remote: str | None = None,
) -> dict[str, Any]:
    """Pull, reproduce as a DVC experiment, push: the whole pipeline on a schedule.

    Runs in the current directory, which must be the project checkout (a deployment's pull step
    or ``recraft serve`` sets it).

    Args:
        task: registered task (or ``npz:PATH``), set in ``params.yaml`` for this run.
        method: scratch, nft, fa, orca or recraft.
        overrides: more ``section.key=value`` settings, as ``recraft run --set`` takes them.
        push: upload the outputs (and the experiment, with ``git_remote``) after the run.
        remote: DVC remote name (default: the project's default remote).
        git_remote: git remote to push the experiment's commit to (default: not pushed).

    Returns:
        The experiment's name, what the remote lacked before the run, the files pushed, the
        evaluate stage's metrics, and the stages' flow runs (:func:`stage_flow_runs`).
    """
    root = Path.cwd()
    set_params = _set_params(task, method, overrides)
    _preflight(root, set_params, git_remote if push else None)
    pulled = pull_outputs(str(root), remote)
    name = reproduce(str(root), set_params, _experiment_name(task, method))
    # The stages ran as flow runs of their own (DVC started them as processes): list and link them.
    stages = stage_flow_runs(str(prefect_runtime.flow_run.id)) if prefect_runtime.flow_run.id else []
    for run in stages:
        _logger().info(f"stage {run['flow']}: flow run {run['name']} {run['state']} {run['url'] or run['id']}")
    pushed = 0
    if push:
        pushed = push_outputs(str(root), pulled["remote"])
        if git_remote:
            share_experiment(str(root), name, git_remote)
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    return {
        "experiment": name,
        "missing_before_run": pulled["missing"],
        "pushed": pushed,
        "metrics": metrics,
        "stage_flow_runs": stages,
    }


def serve(
    cron: str = DEFAULT_CRON,
    *,
    name: str = "recraft-scheduled",
    timezone: str = "UTC",
    parameters: dict[str, Any] | None = None,
) -> None:
    """Serve :func:`scheduled_pipeline` from this process on a cron schedule (``flow.serve``).

    The simplest deployment: no work pool or worker; scheduled runs execute in subprocesses of
    this process, in the current directory (start it in the project checkout). One run at a
    time, since runs share the checkout. Stopping the process pauses the schedule.

    Raises:
        UserError: no Prefect server is configured, ``cron`` is not a cron expression, or the
            parameters do not validate against this checkout's params (:func:`check_parameters`).
    """
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        raise UserError(
            "serving needs a Prefect server: PREFECT_API_URL is not set",
            hint="prefect server start (or infra/compose.yaml), then export PREFECT_API_URL=http://HOST:4200/api",
        )
    try:
        schedule = CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise UserError(f"--cron {cron!r} with timezone {timezone!r} is not a valid schedule: {exc}") from exc
    check_parameters(Path.cwd(), parameters or {})
    scheduled_pipeline.serve(
        name=name,
        schedules=[schedule],
        parameters=parameters or {},
        tags=["recraft", "scheduled"],
        limit=1,
    )
