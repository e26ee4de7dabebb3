"""The DVC remote of the scheduled pipeline: ``dvc pull``, ``dvc push`` and ``dvc exp push`` as
Prefect tasks, retried with backoff on network trouble and failing at once on a misconfiguration."""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger
from prefect.tasks import exponential_backoff

# Project imports stay at module level (see flows/deploy.py: a worker loads the flow from the checkout).
from components.errors import UserError
from flows.settings import redact

__all__ = [
    "RemoteUnavailableError",
    "NETWORK_RETRIES",
    "retry_unless_misconfigured",
    "remote_name",
    "check_reachable",
    "pull_outputs",
    "push_outputs",
    "share_experiment",
]


class RemoteUnavailableError(RuntimeError):
    """A DVC or git remote did not answer (network, endpoint, credentials); the task is retried."""


def retry_unless_misconfigured(task, task_run, state) -> bool:
    """Retry I/O failures, never a :class:`UserError`: a missing remote fails the same way each time."""
    return not isinstance(state.data, UserError)


# Pull and push move data over the network: retried three times, 10 s then 20 s then 40 s apart,
# each delay jittered by up to 50% so that many workers do not retry in step.
NETWORK_RETRIES: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=10),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": retry_unless_misconfigured,
    "cache_policy": NO_CACHE,  # DVC owns staleness
}


def open_repo(root: str):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    try:
        return Repo(root)
    except NotDvcRepoError as exc:
        raise UserError(
            f"{root} is not a DVC project", hint="run the scheduled pipeline in a project checkout"
        ) from exc


def remote_name(repo, remote: str | None) -> str:
    """The DVC remote to use: ``remote``, else the project's default remote.

    Raises:
        UserError: no remote is named and none is the default, or the named one is not configured.
    """
    configured = sorted(repo.config["remote"])
    name = remote or repo.config["core"].get("remote")
    if not name:
        raise UserError(
            "the project has no default DVC remote: scheduled runs share their outputs through one",
            hint="dvc remote add -d NAME s3://BUCKET/PREFIX (or a shared directory), then commit .dvc/config",
        )
    if name not in configured:
        raise UserError(
            f"DVC remote {name!r} is not configured (configured: {', '.join(configured) or 'none'})",
            hint="dvc remote list; dvc remote add NAME URL",
        )
    return name


def check_reachable(repo, name: str) -> None:
    """List the remote's root, so that "unreachable" is never taken for "empty".

    DVC reports objects it could not check (a refused connection, say) as missing, like objects
    that are absent; only a remote that answers can be called cold. A root that does not exist
    yet is an answer: nothing was ever pushed there.

    Raises:
        RemoteUnavailableError: the listing failed for any reason but the root's absence.
    """
    remote = repo.cloud.get_remote(name)
    try:
        try:
            remote.fs.ls(remote.path)
        except NotImplementedError:  # DVC's HTTP file system does not list; the one below does
            remote.fs.fs.ls(remote.path)
    except FileNotFoundError:
        return
    except Exception as exc:  # network, TLS, auth and endpoint errors come in many types
        cause = redact(str(exc))[:200]  # masked before it is cut short
        raise RemoteUnavailableError(
            redact(f"DVC remote {name!r} ({remote.path}) did not answer: {type(exc).__name__}: {cause}")
        ) from exc


@task(name="dvc-pull", **NETWORK_RETRIES)
def pull_outputs(root: str, remote: str | None = None) -> dict[str, Any]:
    """``dvc pull``: the outputs ``dvc.lock`` records, from the remote into the workspace.

    A remote that lacks some of them (a cold remote: nothing pushed yet, or a run that never
    pushed) is not an error: ``dvc exp run`` rebuilds exactly those from their dependencies, so
    the result is the same, only slower. They are returned under ``missing`` and logged. A remote
    that cannot be reached is an error (retried): rebuilding everything would hide it.

    Returns:
        ``{"remote": name, "fetched": files downloaded, "missing": outputs the remote lacks}``.

    Raises:
        UserError: not a DVC project, or no usable remote is configured.
        RemoteUnavailableError: the remote did not answer.
    """
    from dvc.exceptions import CheckoutError, DownloadError

    with open_repo(root) as repo:
        name = remote_name(repo, remote)
        check_reachable(repo, name)
        try:
            result, missing = repo.pull(remote=name), []
        except DownloadError as exc:
            raise RemoteUnavailableError(
                redact(f"dvc pull from remote {name!r}: {exc}; check the endpoint, network and credentials")
            ) from exc
        except CheckoutError as exc:  # fetched what exists; the remote answered that these are absent
            result = exc.result
            # DVC names them relative to this process's working directory; report them as dvc.yaml does.
            missing = sorted(os.path.relpath(os.path.abspath(t), os.path.abspath(root)) for t in exc.target_infos)
    if missing:
        _logger().warning(
            "remote %r lacks %d output(s); dvc exp run rebuilds them: %s", name, len(missing), ", ".join(missing)
        )
    return {"remote": name, "fetched": result.get("stats", {}).get("fetched", 0), "missing": missing}


@task(name="dvc-push", **NETWORK_RETRIES)
def push_outputs(root: str, remote: str | None = None) -> int:
    """``dvc push``: upload the workspace's outputs (what the run produced) to the remote.

    Returns:
        The number of files uploaded (0 when the remote already had them all).

    Raises:
        UserError: not a DVC project, or no usable remote is configured.
        RemoteUnavailableError: some files could not be uploaded.
    """
    from dvc.exceptions import UploadError

    with open_repo(root) as repo:
        name = remote_name(repo, remote)
        try:
            return repo.push(remote=name)
        except UploadError as exc:
            raise RemoteUnavailableError(
                redact(f"dvc push to remote {name!r}: {exc}; check the endpoint, network and credentials")
            ) from exc


@task(name="dvc-exp-push", **NETWORK_RETRIES)
def share_experiment(root: str, name: str, git_remote: str) -> None:
    """``dvc exp push GIT_REMOTE NAME``: the experiment's commit to the team's git remote.

    The data went up with :func:`push_outputs`; this shares the record (params, ``dvc.lock``,
    metrics), so ``dvc exp pull`` / ``dvc exp show`` find the scheduled run.
    """
    from dulwich.errors import GitProtocolError
    from scmrepo.exceptions import SCMError

    with open_repo(root) as repo:
        try:
            repo.experiments.push(git_remote, [name], push_cache=False)
        except (SCMError, GitProtocolError, OSError) as exc:
            raise RemoteUnavailableError(redact(f"dvc exp push to git remote {git_remote!r}: {exc}")) from exc


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called as a plain function (tests, scripts)
        return logging.getLogger(__name__)
