"""The scheduled pipeline (flows/deploy.py) deployed to a real Prefect server and run by a worker.

A `prefect server start` on a free loopback port; the work pools (the Kubernetes one from
infra/prefect/k8s-gpu-job-template.json) and the `gpu` tag limit; `prefect deploy --all` from
the project's prefect.yaml in a temporary git + DVC copy of the project whose DVC remote is a
local directory; a process worker runs one triggered run on tiny params: it must complete and
leave its MLflow runs, its DVC experiment and its pushed outputs, and a fresh clone must pull them
back. `recraft serve` registers its cron deployment. Pull/push semantics (cold remote, unreachable
remote, no remote, retries) are checked on a one-stage DVC project.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from components.errors import UserError
from flows.deploy import _preflight, serve
from flows.dvc_remote import (
    RemoteUnavailableError,
    pull_outputs,
    push_outputs,
    retry_unless_misconfigured,
)
from flows.prefect_local import _free_port, local_prefect_server
from tests.conftest import PER_PROCESS, TINY

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
RUN_OVERRIDES = [*TINY, *PER_PROCESS]  # every stage is its own process under `dvc exp run`
STAGES = {"assets", "prepare", "source", "tune", "align", "fit", "evaluate"}
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "recraft test",
    "GIT_AUTHOR_EMAIL": "test@localhost",
    "GIT_COMMITTER_NAME": "recraft test",
    "GIT_COMMITTER_EMAIL": "test@localhost",
}
RUN_TIMEOUT_S = 420


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process this module started, and its children (it leads its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def _git_repo(path: Path, env: dict) -> None:
    _run(["git", "init", "-q", "-b", "main"], path, env)
    _run([str(BIN / "dvc"), "init", "-q"], path, env)


def _commit(path: Path, env: dict, message: str) -> None:
    _run(["git", "add", "-A"], path, env)
    _run(["git", "commit", "-q", "-m", message], path, env)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _dvc_logs_to_this_tests_streams():
    """``import dvc`` binds DVC's log handlers to ``sys.stdout``/``sys.stderr`` as they are at that
    moment; under pytest that can be an earlier test's capture stream, closed since, and DVC then
    raises on its next warning. Point them at this test's streams (the tests run DVC in-process)."""
    import logging
    import sys

    import dvc  # noqa: F401 - sets up the handlers if nothing has yet

    for name in ("dvc", "dvc_objects", "dvc_data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                # Not setStream(): it flushes the old, closed stream first.
                handler.stream = sys.stderr if handler.level >= logging.WARNING else sys.stdout
    yield


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[str]:
    """A real Prefect server on 127.0.0.1 (PREFECT_HOME in a temp dir); its API URL is this
    module's Prefect API. Stopped at the end of the module."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(home))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with local_prefect_server(home / "server.log") as url, temporary_settings({PREFECT_API_URL: url}):
            yield url
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            # This process's queued run logs and events go out while the server still listens.
            APILogWorker.drain_all(timeout=10)
            EventsWorker.drain_all(timeout=10)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, wheel_cache, api) -> tuple[Path, dict]:
    """A git + DVC copy of the project (code, dvc.yaml, params.yaml, prefect.yaml) whose default
    DVC remote is a local directory; and the environment a worker runs it with: MLflow in a
    SQLite file beside it, the session's wheel cache, CPU."""
    base = tmp_path_factory.mktemp("deploy")
    ws = base / "ws"
    ws.mkdir()
    for name in ("dvc.yaml", "params.yaml", "prefect.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, ws / name)
    for sub in ("components", "flows"):
        shutil.copytree(ROOT / sub, ws / sub, ignore=shutil.ignore_patterns("__pycache__"))
    env = {
        **os.environ,
        **GIT_IDENTITY,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(ws),
        "PREFECT_API_URL": api,
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "DVC_NO_ANALYTICS": "1",
        "OMP_NUM_THREADS": "1",
        "RECRAFT_PROJECT_DIR": str(ws),
        "RECRAFT_TRACKING_URI": f"sqlite:///{base / 'mlflow.db'}",
        "RECRAFT_ARTIFACT_LOCATION": (base / "artifacts").as_uri(),
        "RECRAFT_WHEEL_CACHE": str(wheel_cache),
        "RECRAFT_DEVICE": "cpu",
        "RECRAFT_IMAGE": "registry.example/recraft:test",
    }
    _git_repo(ws, env)
    _run([str(BIN / "dvc"), "remote", "add", "-d", "shared", str(base / "remote")], ws, env)
    _commit(ws, env, "project")
    # The team's git repository, where scheduled runs share their experiment commits.
    _run(["git", "init", "-q", "--bare", "-b", "main", str(base / "origin.git")], base, env)
    _run(["git", "remote", "add", "origin", str(base / "origin.git")], ws, env)
    _run(["git", "push", "-q", "origin", "main"], ws, env)
    return ws, env


@pytest.fixture(scope="module")
def one_stage_project(tmp_path_factory) -> Path:
    """A one-stage DVC project (no ML), reproduced and committed; no remote."""
    env = {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}
    repo = tmp_path_factory.mktemp("one_stage") / "repo"
    repo.mkdir()
    _git_repo(repo, env)
    (repo / "params.yaml").write_text("word: hello\n")
    stage = {"cmd": "mkdir -p out && cp params.yaml out/copy.yaml", "params": ["word"], "outs": ["out"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"copy": stage}}))
    _run([str(BIN / "dvc"), "repro", "-q"], repo, env)
    _commit(repo, env, "one stage")
    return repo


@pytest.fixture
def tiny_dvc(one_stage_project, tmp_path) -> tuple[Path, dict]:
    """A copy of the one-stage project for one test (a copy is a complete git + DVC repo)."""
    repo = shutil.copytree(one_stage_project, tmp_path / "repo", symlinks=True)
    return repo, {**os.environ, **GIT_IDENTITY, "DVC_NO_ANALYTICS": "1"}


def _forget_outputs(repo: Path) -> None:
    """The workspace as a fresh clone has it: no outputs, an empty cache."""
    shutil.rmtree(repo / "out")
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)


# ---------------------------------------------------------------- the deployment, end to end


async def _deploy_setup(template: dict) -> None:
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    async with get_client() as client:
        await client.create_work_pool(WorkPoolCreate(name="recraft-process", type="process"))
        # The server checks the template: every {{ variable }} it uses must be declared.
        await client.create_work_pool(
            WorkPoolCreate(name="recraft-k8s-gpu", type="kubernetes", base_job_template=template)
        )
        await client.create_concurrency_limit(tag="gpu", concurrency_limit=1)  # prefect concurrency-limit create gpu 1


async def _wait_for_run(deployment_name: str, parameters: dict, worker: subprocess.Popen, log: Path):
    from prefect import get_client

    async with get_client() as client:
        deployment = await client.read_deployment_by_name(deployment_name)
        run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            run = await client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                break
            assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-4000:]}"
            await _sleep(2)
        return run


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def _slot_acquisitions(limit_id, wait_s: float = 30) -> int:
    """How many times a task took a slot of the limit (events, which the server persists in batches)."""
    import asyncio

    from prefect import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    wanted = EventFilter(
        event=EventNameFilter(name=["prefect.concurrency-limit.acquired"]),
        resource=EventResourceFilter(id=[f"prefect.concurrency-limit.{limit_id}"]),
    )
    deadline = time.monotonic() + wait_s
    async with get_client() as client:
        while True:
            page = await client.read_events(filter=wanted, limit=50)  # the server's maximum
            if page.events or time.monotonic() > deadline:
                return len(page.events)
            await asyncio.sleep(1)


def _mlflow_pipeline_runs(db: Path, workspace: Path) -> list[tuple[str, str, dict, set[str]]]:
    """(run id, status, tags, child stage names) of the pipeline runs of ``workspace``."""
    with sqlite3.connect(db) as con:
        parents = con.execute(
            "SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'recraft.workspace' AND t.value = ?",
            (str(workspace.resolve()),),
        ).fetchall()
        out = []
        for run_id, status in parents:
            tags = dict(con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,)).fetchall())
            children = con.execute(
                "SELECT t2.value FROM tags t JOIN tags t2 ON t2.run_uuid = t.run_uuid "
                "WHERE t.key = 'mlflow.parentRunId' AND t.value = ? AND t2.key = 'recraft.stage'",
                (run_id,),
            ).fetchall()
            out.append((run_id, status, tags, {c[0] for c in children}))
    return out


def _check_deployments(ws: Path, env: dict) -> None:
    """The deployments read back from the API are prefect.yaml's: schedules, parameters, pools."""
    import asyncio

    from prefect import get_client

    names = ("recraft-nightly", "recraft-nightly-gpu")

    async def read_deployments():
        async with get_client() as client:
            return [await client.read_deployment_by_name(f"recraft-scheduled-pipeline/{n}") for n in names]

    nightly, gpu = asyncio.run(read_deployments())
    spec = {d["name"]: d for d in yaml.safe_load((ws / "prefect.yaml").read_text())["deployments"]}
    for dep in (nightly, gpu):
        (schedule,) = dep.schedules
        assert schedule.active and schedule.schedule.cron == spec[dep.name]["schedules"][0]["cron"]
        assert schedule.schedule.timezone == "UTC"
        assert dep.parameters == spec[dep.name]["parameters"]
        assert dep.entrypoint == "flows/deploy.py:scheduled_pipeline"
    assert nightly.work_pool_name == "recraft-process" and gpu.work_pool_name == "recraft-k8s-gpu"
    # One run at a time per checkout (DVC locks the workspace); the next one waits its turn.
    assert nightly.global_concurrency_limit.limit == 1
    assert nightly.concurrency_options.collision_strategy == "ENQUEUE"
    # Deploy-time templating filled the image; the checkout's path is left for run time.
    assert gpu.job_variables["image"] == env["RECRAFT_IMAGE"] and gpu.job_variables["gpu_count"] == 1
    assert nightly.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": "{{ $RECRAFT_PROJECT_DIR }}"}}
    ]


def test_prefect_yaml_deploys_and_a_process_worker_runs_the_pipeline(api, workspace):
    import asyncio

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, TaskRunFilter, TaskRunFilterTags

    ws, env = workspace
    template = json.loads((ROOT / "infra" / "prefect" / "k8s-gpu-job-template.json").read_text())
    asyncio.run(_deploy_setup(template))
    log = ws.parent / "worker.log"
    with open(log, "wb") as out:  # started first: its start-up overlaps `prefect deploy`
        worker = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "recraft-process", "--type", "process"],
            cwd=ws.parent,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # As infra/compose.yaml's prefect-setup does it: the checkout's path is not known where
        # `prefect deploy` runs, so the pull step keeps its placeholder until the worker runs it.
        deploy_env = {k: v for k, v in env.items() if k != "RECRAFT_PROJECT_DIR"}
        deployed = _run([str(BIN / "prefect"), "--no-prompt", "deploy", "--all"], ws, deploy_env)
        assert "recraft-nightly-gpu" in deployed.stdout
        _check_deployments(ws, env)
        parameters = {"method": "nft", "overrides": RUN_OVERRIDES, "git_remote": "origin"}
        run = asyncio.run(_wait_for_run("recraft-scheduled-pipeline/recraft-nightly", parameters, worker, log))
    finally:
        _stop(worker)
    assert run.state is not None and run.state.is_completed(), (
        f"{run.state}\n{run.state.message if run.state else ''}\n{log.read_text()[-6000:]}"
    )
    assert run.parameters["task"] == "dna" and run.parameters["method"] == "nft"  # deployment + run values

    # Prefect: the flow's own tasks, and the stages' gpu-tagged task, ran against this server
    # (so the `gpu` limit, a global limit named tag:gpu, applied to them).
    async def read_task_runs():
        async with get_client() as client:
            mine = await client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id]}))
            gpu_runs = await client.read_task_runs(task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=["gpu"])))
            limit = await client.read_global_concurrency_limit_by_name("tag:gpu")
            return mine, gpu_runs, limit

    mine, gpu_runs, limit = asyncio.run(read_task_runs())
    names = sorted(t.name.rsplit("-", 1)[0] for t in mine)
    assert names == ["dvc-exp-push", "dvc-exp-run", "dvc-pull", "dvc-push"]
    assert all(t.state.is_completed() for t in mine)
    assert any(t.name.startswith("fit-model") for t in gpu_runs)
    assert all(t.state.is_completed() for t in gpu_runs) and limit.limit == 1
    assert asyncio.run(_slot_acquisitions(limit.id)) >= 1  # the stage's gpu task took a slot of the limit

    # The stages' flow runs (processes DVC started, so not subflows) carry the scheduled run's id
    # as a tag: one completed flow run per stage, found by that tag.
    from flows.deploy import stage_flow_runs

    stages = stage_flow_runs(str(run.id))
    assert sorted(s["flow"] for s in stages) == sorted(STAGES), stages
    assert all(s["state"] == "COMPLETED" for s in stages), stages

    # MLflow: one finished pipeline run for this workspace, with a child run per stage.
    ((_, status, tags, children),) = _mlflow_pipeline_runs(ws.parent / "mlflow.db", ws)
    assert status == "FINISHED" and tags["method"] == "nft" and tags["task"] == "dna"
    assert children == STAGES - {"tune"}  # with use_tuned: false, tune searches (and logs) nothing

    # DVC: the run is an experiment commit holding the params it ran with and its dvc.lock ...
    refs = _run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], ws, env).stdout.split()
    (ref,) = [r for r in refs if r.rsplit("/", 1)[-1].startswith("dna-nft-")]
    params = yaml.safe_load(_run(["git", "show", f"{ref}:params.yaml"], ws, env).stdout)
    assert params["method"] == "nft" and params["model"]["n_layers"] == 1 and params["prepare"]["max_train"] == 96
    lock = yaml.safe_load(_run(["git", "show", f"{ref}:dvc.lock"], ws, env).stdout)
    assert set(lock["stages"]) == STAGES
    # ... and every cached output it records (dvc.yaml's outs; metrics and plots are not cached)
    # was pushed to the remote.
    remote = ws.parent / "remote" / "files" / "md5"
    cached = {
        o for stage in yaml.safe_load((ws / "dvc.yaml").read_text())["stages"].values() for o in stage.get("outs", [])
    }
    outs = [o for stage in lock["stages"].values() for o in stage.get("outs", []) if o["path"] in cached]
    assert len(outs) == len(cached) > 0
    for out in outs:
        assert (remote / out["md5"][:2] / out["md5"][2:]).is_file(), f"{out['path']} was not pushed"

    # A teammate's fresh clone of the team's repository finds the experiment (pushed there by the
    # run) and pulls its outputs from the DVC remote.
    clone = ws.parent / "clone"
    _run(["git", "clone", "-q", str(ws.parent / "origin.git"), str(clone)], ws.parent, env)
    _run(["git", "fetch", "-q", "origin", ref], clone, env)  # experiments live outside branches
    _run(["git", "checkout", "-q", "FETCH_HEAD"], clone, env)
    assert yaml.safe_load((clone / "params.yaml").read_text())["method"] == "nft"
    pulled = pull_outputs.fn(str(clone))
    assert pulled["missing"] == [] and pulled["fetched"] > 0
    model = Path("models") / "model" / "weights.safetensors"
    assert (clone / model).read_bytes() == (ws / model).read_bytes()


def test_recraft_serve_registers_a_cron_deployment(api, workspace):
    import asyncio

    from prefect import get_client

    ws, env = workspace
    cmd = [str(BIN / "recraft"), "serve", "--cron", "*/15 * * * *", "--name", "served", "--method", "nft"]
    cmd += ["--set", "fit.epochs=1"]
    log = ws.parent / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_for_deployment():
        async with get_client() as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                found = await client.read_deployments()
                served = [d for d in found if d.name == "served"]
                if served:
                    return served[0]
                await asyncio.sleep(1)
            raise AssertionError(f"no deployment after 120 s:\n{log.read_text()[-3000:]}")

    try:
        deployment = asyncio.run(wait_for_deployment())
    finally:
        _stop(proc)
    (schedule,) = deployment.schedules
    assert schedule.schedule.cron == "*/15 * * * *" and schedule.active
    assert deployment.parameters["method"] == "nft" and deployment.parameters["task"] == "dna"
    assert deployment.parameters["overrides"] == ["fit.epochs=1"] and deployment.parameters["push"] is True
    assert "scheduled" in deployment.tags


def test_serve_refuses_without_a_server_or_with_a_bad_cron(api):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: None}), pytest.raises(UserError, match="PREFECT_API_URL"):
        serve("0 3 * * *")
    with pytest.raises(UserError, match="not a valid schedule"):
        serve("every night")


# ---------------------------------------------------------------- pull and push


def test_pull_tolerates_a_cold_remote_and_restores_a_warm_one(tiny_dvc, tmp_path):
    repo, env = tiny_dvc
    _run([str(BIN / "dvc"), "remote", "add", "-d", "shared", str(tmp_path / "remote")], repo, env)
    pushed = push_outputs.fn(str(repo))
    assert pushed > 0 and push_outputs.fn(str(repo)) == 0  # the second push has nothing to add

    _forget_outputs(repo)
    pulled = pull_outputs.fn(str(repo))
    assert pulled == {"remote": "shared", "fetched": pulled["fetched"], "missing": []} and pulled["fetched"] > 0
    assert yaml.safe_load((repo / "out" / "copy.yaml").read_text()) == {"word": "hello"}

    # Cold: a remote that never received these outputs. dvc exp run rebuilds them, so the pull
    # says which ones are missing instead of failing.
    _run([str(BIN / "dvc"), "remote", "add", "cold", str(tmp_path / "cold")], repo, env)
    _forget_outputs(repo)
    assert pull_outputs.fn(str(repo), "cold") == {"remote": "cold", "fetched": 0, "missing": ["out"]}


def test_an_unreachable_remote_fails_clearly_and_a_missing_one_is_not_retried(tiny_dvc):
    repo, env = tiny_dvc
    with pytest.raises(UserError, match="no default DVC remote") as no_remote:
        pull_outputs.fn(str(repo))
    assert "dvc remote add" in no_remote.value.hint
    with pytest.raises(UserError, match="'nowhere' is not configured"):
        push_outputs.fn(str(repo), "nowhere")

    dead = f"http://127.0.0.1:{_free_port()}/dvc"  # nothing listens there
    _run([str(BIN / "dvc"), "remote", "add", "-d", "dead", dead], repo, env)
    _forget_outputs(repo)
    with pytest.raises(RemoteUnavailableError, match="DVC remote 'dead' .* did not answer: ClientConnectorError"):
        pull_outputs.fn(str(repo))


def test_pull_is_retried_with_backoff_on_io_errors_only(api, tiny_dvc, monkeypatch):
    """Under a flow run: an unreachable remote is tried 1 + 3 times; a missing one once."""
    from prefect import flow
    from prefect.states import Failed

    from flows import dvc_remote

    assert pull_outputs.retries == 3 and push_outputs.retries == 3
    assert pull_outputs.retry_delay_seconds == [10, 20, 40]  # exponential: 10 * 2**n
    assert pull_outputs.retry_jitter_factor == 0.5
    assert retry_unless_misconfigured(None, None, Failed(data=RemoteUnavailableError("x")))
    assert not retry_unless_misconfigured(None, None, Failed(data=UserError("x")))

    # Each attempt starts by resolving the remote: count attempts here, in this process. (Reading
    # the task runs back from the API races with Prefect's asynchronous event delivery.)
    attempts: list[str | None] = []
    resolve = dvc_remote.remote_name

    def counted(repo, remote):
        attempts.append(remote)
        return resolve(repo, remote)

    monkeypatch.setattr(dvc_remote, "remote_name", counted)
    repo, env = tiny_dvc
    fast = pull_outputs.with_options(retry_delay_seconds=0, retry_jitter_factor=None)

    @flow
    def pulls() -> list:
        states = [fast(str(repo), return_state=True)]  # no remote: misconfigured
        tried = len(attempts)
        _run([str(BIN / "dvc"), "remote", "add", "-d", "dead", f"http://127.0.0.1:{_free_port()}/x"], repo, env)
        _forget_outputs(repo)
        states.append(fast(str(repo), return_state=True))  # unreachable
        return [*states, tried]

    misconfigured, unreachable, tried_first = pulls()
    assert misconfigured.is_failed() and unreachable.is_failed()
    assert isinstance(misconfigured.result(raise_on_failure=False), UserError)
    assert isinstance(unreachable.result(raise_on_failure=False), RemoteUnavailableError)
    assert (tried_first, len(attempts) - tried_first) == (1, 4)


def test_preflight_names_what_a_scheduled_run_lacks(tiny_dvc, tmp_path, monkeypatch):
    repo, _ = tiny_dvc
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "params.yaml", project / "params.yaml")
    with pytest.raises(UserError, match="not a git checkout with a commit"):
        _preflight(project, ["task=dna"])

    _run(["git", "init", "-q"], project, {**os.environ, **GIT_IDENTITY})
    _commit(project, {**os.environ, **GIT_IDENTITY}, "params")
    with pytest.raises(UserError, match="fit.nope: unknown key"):
        _preflight(project, ["task=dna", "method=nft", "fit.nope=1"])
    _preflight(project, ["task=dna", "method=nft", *RUN_OVERRIDES])  # accepted as the stages would
    with pytest.raises(UserError, match="git remote 'team' is not configured"):
        _preflight(project, ["task=dna"], git_remote="team")
    _preflight(project, ["task=dna"], git_remote=str(tmp_path / "team.git"))  # a location: used as given

    # No identity anywhere: not in the environment, the user's or the system's git config, and
    # git may not guess one from the host name.
    for name in [*GIT_IDENTITY, "EMAIL"]:
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    with pytest.raises(UserError, match="no identity"):
        _preflight(project, ["task=dna"])
