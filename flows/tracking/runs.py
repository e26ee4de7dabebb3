"""The one MLflow adapter: pipeline parent runs, stage child runs, metrics, artifacts, models.

DVC runs each stage in its own process, so a stage finds the pipeline's parent run by tag: the
first stage of a ``dvc repro`` opens a parent run (tagged with the workspace), later stages attach
their child runs to it, and ``evaluate`` closes it. A failed stage marks the parent FAILED.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.errors import UserError
from flows.settings import Settings, redact

__all__ = [
    "WORKSPACE_TAG",
    "Tracker",
    "ClientRun",
    "count_experiments",
    "runtime_tags",
    "tag_workspace_runs",
    "use_tracking_uri",
]

#: Seconds between system-metric samples on the align and fit stage runs (MLflow's default, 10 s,
#: leaves a short CPU fit one sample or none).
SYSTEM_METRICS_INTERVAL_S = 2
_PIPELINE_TAG = "recraft.pipeline"
WORKSPACE_TAG = "recraft.workspace"


@contextmanager
def _first_use_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store across processes (``<db>.lock``, an advisory lock).

    MLflow creates and migrates a new SQLite store's schema when a process first opens it; two
    processes doing that at once corrupt it (a half-done migration leaves ``_alembic_tmp_*``
    tables behind and every later open fails). Server-backed stores need no lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///") + ".lock")
    try:
        handle = open(lock, "a")  # noqa: SIM115 - held for the block
    except OSError:  # the store's directory is missing: MLflow reports it, with the URI
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _redacted(tags: dict[str, str]) -> dict[str, str]:
    """Tag values as stored: a password in a URL (a data location, a message) is masked."""
    return {k: redact(str(v)) for k, v in tags.items()}


def runtime_tags() -> dict[str, str]:
    """What, besides params and seed, decides a CPU run's numbers: the torch build and its thread
    count (a different count sums floats in another order; the one-epoch DNA fit notices)."""
    import torch

    return {"recraft.torch": torch.__version__, "recraft.torch_threads": str(torch.get_num_threads())}


def use_tracking_uri(uri: str) -> None:
    """``mlflow.set_tracking_uri(uri)`` without its side effect on the process environment.

    MLflow also exports the URI as ``MLFLOW_TRACKING_URI``, which :class:`Settings` honours: a
    later workspace in the same process (or a subprocess started from it) would silently log to
    this store. The variable is put back as the user had it.
    """
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


class Tracker:
    """MLflow runs for one workspace.

    Args:
        settings: where the store is (tracking URI, artifact location, experiment name).
        workspace: identifies the pipeline run's home (the DVC repo or ``--workdir``).
    """

    def __init__(self, settings: Settings, workspace: Path) -> None:
        import mlflow

        self._mlflow = mlflow
        self.settings = settings
        self.workspace = str(workspace.resolve())
        uri = settings.resolved_tracking_uri()
        use_tracking_uri(uri)
        try:
            with _first_use_lock(uri):
                exp = mlflow.get_experiment_by_name(settings.experiment)
                if exp is None:
                    exp_id = mlflow.create_experiment(
                        settings.experiment, artifact_location=settings.resolved_artifact_location()
                    )
                else:
                    exp_id = exp.experiment_id
        except Exception as exc:  # MLflow raises many types for an unreachable store
            first = (redact(str(exc)).splitlines() or [type(exc).__name__])[0][:200]  # errors may quote the URL
            raise UserError(
                f"cannot reach the MLflow tracking store {redact(uri)}: {first}",
                hint="check RECRAFT_TRACKING_URI (unset it to use the local SQLite store)",
            ) from exc
        self.experiment_id = exp_id

    def _open_parent(self, params_flat: dict[str, Any], tags: dict[str, str]) -> str:
        client = self._mlflow.MlflowClient()
        found = client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`{_PIPELINE_TAG}` = 'true' and tags.`{WORKSPACE_TAG}` = '{self.workspace}' "
                "and attributes.status = 'RUNNING'"
            ),
            max_results=1,
        )
        if found:
            return found[0].info.run_id
        run = client.create_run(
            self.experiment_id,
            tags={_PIPELINE_TAG: "true", WORKSPACE_TAG: self.workspace, **_redacted(tags)},
            run_name=f"{tags.get('task', 'pipeline')}-{tags.get('method', '')}",
        )
        self._log_params(client, run.info.run_id, params_flat)
        return run.info.run_id

    @staticmethod
    def _log_params(client, run_id: str, params_flat: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, redact(str(v))) for k, v in sorted(params_flat.items())]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])

    @contextmanager
    def stage(
        self,
        name: str,
        params_flat: dict[str, Any],
        tags: dict[str, str],
        close_parent: bool = False,
        system_metrics: bool = False,
    ) -> Iterator[StageRun]:
        """A child run for one stage under the workspace's open pipeline run.

        The parent is handled through the client only (the fluent API would end it on exit);
        the child is the active fluent run inside the block, so model logging lands in it.
        ``system_metrics``: MLflow's own system metrics (``system/cpu_utilization_percentage``,
        ``system/system_memory_usage_megabytes``, ...; GPU utilisation and memory where a GPU and
        ``nvidia-ml-py`` are present) every :data:`SYSTEM_METRICS_INTERVAL_S` seconds.
        """
        mlflow = self._mlflow
        client = mlflow.MlflowClient()
        parent_id = self._open_parent(params_flat, tags)
        self._mark_killed(client, parent_id, name)
        child = client.create_run(
            self.experiment_id,
            run_name=name,
            tags={"mlflow.parentRunId": parent_id, "recraft.stage": name, **runtime_tags(), **_redacted(tags)},
        )
        self._log_params(client, child.info.run_id, params_flat)
        self.parent_id = parent_id
        try:
            if system_metrics:
                mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)
                mlflow.set_system_metrics_samples_before_logging(1)
            with mlflow.start_run(run_id=child.info.run_id, log_system_metrics=system_metrics):
                try:
                    yield StageRun(mlflow, child.info.run_id)
                except Exception:
                    raise
                except BaseException:  # stopped (Ctrl-C, SIGTERM): a re-run resumes under the same parent
                    # Ended KILLED in one write, before start_run's exit would end it FAILED: a kill
                    # between two writes would leave FAILED. Killed before it, the run stays
                    # RUNNING, which the re-run marks KILLED.
                    mlflow.end_run("KILLED")
                    raise
        except Exception:
            client.set_terminated(parent_id, status="FAILED")
            raise
        if close_parent:
            client.set_terminated(parent_id, status="FINISHED")

    def _mark_killed(self, client, parent_id: str, name: str) -> None:
        """A stage's child run still RUNNING belongs to a process that was killed: say so."""
        stale = client.search_runs(
            [self.experiment_id],
            filter_string=(
                f"tags.`mlflow.parentRunId` = '{parent_id}' and tags.`recraft.stage` = '{name}' "
                "and attributes.status = 'RUNNING'"
            ),
        )
        for run in stale:
            client.set_terminated(run.info.run_id, status="KILLED")

    def log_lineage(self, tags: dict[str, str], datasets: dict[str, tuple[str, str]]) -> None:
        """Lineage on the pipeline run: ``tags`` (:func:`flows.lineage.lineage_tags`) and each split
        as an MLflow dataset input, ``datasets``: context (train, val, test) -> (digest, path)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        client = self._mlflow.MlflowClient()
        for key, value in _redacted(tags).items():
            client.set_tag(self.parent_id, key, value)
        inputs = [
            DatasetInput(
                Dataset(name=f"{context}.npz", digest=digest, source_type="local", source=json.dumps({"uri": path})),
                tags=[InputTag("mlflow.data.context", context)],
            )
            for context, (digest, path) in datasets.items()
        ]
        client.log_inputs(self.parent_id, datasets=inputs)

    def log_parent_metrics(self, metrics: dict[str, float]) -> None:
        """Final metrics on the pipeline run itself, so the runs table shows them."""
        client = self._mlflow.MlflowClient()
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and math.isfinite(v):
                client.log_metric(self.parent_id, k, float(v))

    def study_run(self, study: str, params_flat: dict[str, Any], tags: dict[str, str]) -> str:
        """The parent run of an Optuna study: found by its study tag (a rerun resumes it), else created."""
        client = self._mlflow.MlflowClient()
        found = client.search_runs(
            [self.experiment_id], filter_string=f"tags.`recraft.study` = '{study}'", max_results=1
        )
        if found:
            client.update_run(found[0].info.run_id, status="RUNNING")
            return found[0].info.run_id
        run = client.create_run(
            self.experiment_id,
            tags={"recraft.study": study, **_redacted(tags)},
            run_name=f"tune-{tags.get('task', '')}",
        )
        self._log_params(client, run.info.run_id, params_flat)
        return run.info.run_id

    def trial_run(self, parent_id: str, name: str, params: dict[str, Any], tags: dict[str, str]) -> ClientRun:
        """A child run under ``parent_id`` (an Optuna trial), logged through the client only, so
        several trials in several processes never share a fluent active run."""
        client = self._mlflow.MlflowClient()
        run = client.create_run(
            self.experiment_id, run_name=name, tags={"mlflow.parentRunId": parent_id, **_redacted(tags)}
        )
        self._log_params(client, run.info.run_id, params)
        return ClientRun(client, run.info.run_id)

    def run(self, run_id: str) -> ClientRun:
        return ClientRun(self._mlflow.MlflowClient(), run_id)


class ClientRun:
    """Logging to one run by id (no active fluent run)."""

    def __init__(self, client, run_id: str) -> None:
        self._client = client
        self.run_id = run_id

    def metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        ]
        if items:
            self._client.log_batch(self.run_id, metrics=items)

    def tags(self, tags: dict[str, str]) -> None:
        for k, v in _redacted(tags).items():
            self._client.set_tag(self.run_id, k, v)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def end(self, status: str = "FINISHED") -> None:
        self._client.set_terminated(self.run_id, status=status)


class StageRun:
    """Logging inside one stage's child run."""

    def __init__(self, mlflow, run_id: str) -> None:
        self._mlflow = mlflow
        self.run_id = run_id

    def metrics(self, metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
        """Log finite metrics as ``prefix/name`` (names may already carry their split)."""
        clean = {
            (f"{prefix}/{k}" if prefix else k): float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(v)
        }
        self._mlflow.log_metrics(clean, step=step)

    def artifact(self, path: str | Path, folder: str | None = None) -> None:
        self._mlflow.log_artifact(str(path), artifact_path=folder)

    def tags(self, tags: dict[str, str]) -> None:
        self._mlflow.set_tags(_redacted(tags))


def tag_workspace_runs(settings: Settings, root: Path, tags: dict[str, str]) -> None:
    """Tag the pipeline runs of workspace ``root``, and close them if a shared stage left them open."""
    import mlflow

    client = mlflow.MlflowClient(settings.resolved_tracking_uri())
    exp = client.get_experiment_by_name(settings.experiment)
    found = client.search_runs(
        [exp.experiment_id],
        filter_string=f"tags.`recraft.pipeline` = 'true' and tags.`recraft.workspace` = '{root.resolve()}'",
    )
    for run in found:
        for k, v in tags.items():
            client.set_tag(run.info.run_id, k, v)
        if run.info.status == "RUNNING":
            client.set_terminated(run.info.run_id, "FINISHED")


def count_experiments(uri: str) -> int:
    """How many experiments the tracking store at ``uri`` holds (up to 100): a reachability check."""
    import mlflow

    return len(mlflow.MlflowClient(tracking_uri=uri).search_experiments(max_results=100))
