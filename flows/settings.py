"""Environment settings: where things are stored, never what results are computed.

Read from ``RECRAFT_*`` environment variables (or a ``.env`` file) at the entry point, never at
import time. Paths that are relative resolve against the project root, so DVC's queued
experiments (which run in a temp copy) still write to the same stores.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from pydantic import Field, SerializationInfo, SerializerFunctionWrapHandler, model_serializer, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "load_settings", "configure_prefect", "sqlite_file", "redact", "PARENT_FLOW_RUN", "parent_tags"]

# The password of a URL's userinfo, ``scheme://user:PASSWORD@host``: up to the first ``@``, as
# SQLAlchemy reads it (an unescaped ``/`` or ``:`` in it is masked too), never past whitespace, so
# a URL is found inside a message or a log line. A ``host:port/path@x`` is masked too: harmless.
_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>:/@]*):[^\s@]*@")
# ``password=VALUE``: a query parameter (``?user=u&password=p``, which libpq and SQLAlchemy accept)
# or a libpq key/value connection string, as driver errors may quote them.
_KEY_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|[^\s&;,'\"]+)", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with every password in it replaced by ``***``: in URLs
    (``postgresql+psycopg2://user:***@host/db``) and ``password=`` parameters.

    For whatever is shown or stored: output, log lines, exception messages, MLflow tags and
    params, files in a workspace. URLs may sit anywhere in ``text``; the rest is unchanged.
    """
    text = _URL_PASSWORD.sub(r"\g<head>:***@", text)
    return _KEY_PASSWORD.sub(r"\g<head>***", text)


# MLflow's own variables, honoured where the ``RECRAFT_*`` one is not set: field -> variable.
# (``MLFLOW_REGISTRY_URI`` and ``AWS_*`` are read by MLflow and boto3 themselves.)
# A stage process started by DVC cannot be a Prefect subflow of the flow run that started DVC
# (a subflow runs in its parent's process). The parent puts its flow run id in this variable
# instead, and every stage's flow run carries it as a tag: ``parent-flow-run:<id>``.
PARENT_FLOW_RUN = "RECRAFT_PARENT_FLOW_RUN"


def parent_tags() -> list[str]:
    """The Prefect tags that tie this process's flow runs to the flow run that started it."""
    parent = os.environ.get(PARENT_FLOW_RUN, "").strip()
    return [f"parent-flow-run:{parent}"] if parent else []


TOOL_VARIABLES = {"tracking_uri": "MLFLOW_TRACKING_URI", "experiment": "MLFLOW_EXPERIMENT_NAME"}


class Settings(BaseSettings):
    """Stores and caches. Every field maps to ``RECRAFT_<FIELD>`` in the environment; where that is
    not set, ``tracking_uri`` and ``experiment`` take MLflow's ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_EXPERIMENT_NAME`` (:data:`TOOL_VARIABLES`). :meth:`source` says which one is in force.
    """

    model_config = SettingsConfigDict(env_prefix="RECRAFT_", env_file=".env", extra="ignore")

    root: Path = Field(Path("."), description="project root; relative paths below resolve against it")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<root>/mlflow.db)")
    artifact_location: str | None = Field(None, description="MLflow artifact root for new experiments")
    experiment: str = Field("recraft", description="MLflow experiment name")
    registered_model: str = Field("recraft-{task}", description="MLflow registered model name template")
    wheel_cache: Path = Field(Path.home() / ".cache" / "recraft" / "wheels", description="pinned wheel cache")
    device: str = Field("auto", description="auto (CUDA when present), cpu, cuda, cuda:N")
    asset_mirror: str | None = Field(
        None, description="s3://bucket/prefix: a shared mirror of the wheel cache (read first, filled after downloads)"
    )
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint for the mirror (default: AWS)")
    optuna_storage: str | None = Field(None, description="Optuna RDB storage URL for recraft tune (SQLite, PostgreSQL)")
    checkpoint_every: int = Field(
        50, ge=0, description="align/fit save a resumable state every N optimiser steps and each epoch (0: off)"
    )
    log_every: int = Field(
        10,
        ge=1,
        description="fit logs its mean training loss every N optimiser steps (fit/train_loss, plots/fit_steps.csv)",
    )

    @model_validator(mode="after")
    def _tool_variables(self) -> Settings:
        """Fill the fields that no ``RECRAFT_*`` variable (nor an argument) set from MLflow's own."""
        adopted = {}
        for field, variable in TOOL_VARIABLES.items():
            unset = field not in self.model_fields_set or not getattr(self, field)  # "" is unset too
            if unset and os.environ.get(variable):
                setattr(self, field, os.environ[variable])
                adopted[field] = variable
        object.__setattr__(self, "_adopted", adopted)
        return self

    def source(self, field: str) -> str:
        """Where ``field``'s value comes from: ``RECRAFT_<FIELD>`` (or an argument), MLflow's own
        variable, or ``default``."""
        if field in getattr(self, "_adopted", {}):
            return self._adopted[field]
        return f"RECRAFT_{field.upper()}" if field in self.model_fields_set and getattr(self, field) else "default"

    def __repr_args__(self):
        """Fields as ``repr`` shows them (tracebacks, logs), with passwords in URLs masked."""
        for name, value in super().__repr_args__():
            yield name, redact(value) if isinstance(value, str) else value

    @model_serializer(mode="wrap")
    def _masked(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> dict:
        """Dumps mask passwords in URLs: Prefect stores a flow's parameters (the benchmark flow
        takes the settings) on its server. ``model_dump_json(context={"include_secrets": True})`` keeps
        them, for handing the settings to a worker process."""
        data = handler(self)
        if (info.context or {}).get("include_secrets"):
            return data
        return {k: redact(v) if isinstance(v, str) else v for k, v in data.items()}

    def resolved_root(self) -> Path:
        return self.root.resolve()

    def resolved_tracking_uri(self) -> str:
        if self.tracking_uri:
            return self.tracking_uri
        return f"sqlite:///{self.resolved_root() / 'mlflow.db'}"

    def resolved_artifact_location(self) -> str:
        if self.artifact_location:
            return self.artifact_location
        return (self.resolved_root() / "mlartifacts").as_uri()


def sqlite_file(url: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URL (MLflow or Optuna store), else ``None``.

    Opening a missing SQLite store creates it; read-only checks look for the file first.
    """
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def load_settings(**overrides) -> Settings:
    """Settings from the environment, with explicit overrides (tests, CLI options)."""
    return Settings(**overrides)


def configure_prefect() -> None:
    """Defaults for Prefect's local mode; call before ``prefect`` is imported. Explicit
    environment settings always win.

    Without ``PREFECT_API_URL`` each process starts a temporary local server; on 2 cores its
    default 20 s start-up timeout is too tight, so it is raised. Telemetry is off (no network).
    """
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    # A failed flow or task run would log its traceback; the CLI reports errors itself (one
    # line for bad input, the traceback for bugs or with --debug).
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_FLOW_RUNS_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_TASK_RUNS_LEVEL", "CRITICAL")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per model log/load
    # Loading a body logs a key report (the pooler we drop) and draws a progress bar per load.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # Prefect's event worker logs under its own top-level name, outside PREFECT_LOGGING_LEVEL.
    logging.getLogger("EventsWorker").setLevel(logging.ERROR)
