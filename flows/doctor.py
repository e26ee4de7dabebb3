"""``recraft doctor``: the environment, the pinned assets and the stores, checked read-only.

Each check gives one row: ``ok``, ``warn`` (works, but worth knowing: an asset not cached yet
is fetched on first use), ``skip`` (not configured) or ``fail`` (a run would fail: an unreachable
store, a tampered extracted asset, a device that does not exist). Nothing is created: a missing
SQLite store is reported, not opened.
"""

from __future__ import annotations

import os
import platform
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from flows.settings import Settings, redact, sqlite_file

__all__ = ["Check", "run_checks", "passed", "to_json", "print_table"]

_TIMEOUT_S = 5


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    name: str
    status: str  # ok | warn | skip | fail
    detail: str


def run_checks(settings: Settings, cwd: Path) -> list[Check]:
    """Every check, in the order of the report. ``cwd`` is where ``dvc`` would run.

    A password in a store's URL, or quoted by a driver's error, is masked in every detail.
    """
    checks = [
        Check("python", "ok", f"{platform.python_version()} ({sys.executable})"),
        _guard("torch", _torch),
        _guard("device", lambda: _device(settings)),
    ]
    checks += _assets(settings)
    checks += [
        _guard("tracking store", lambda: _tracking(settings), settings.resolved_tracking_uri()),
        Check("mlflow experiment", "ok", f"{settings.experiment} (from {settings.source('experiment')})"),
        _registry(settings),
        _guard("mlflow artifacts", lambda: _artifacts(settings)),
        _guard("optuna storage", lambda: _optuna(settings.optuna_storage)),
        _guard("prefect api", lambda: _prefect(os.environ.get("PREFECT_API_URL")), os.environ.get("PREFECT_API_URL")),
        _guard("s3 mirror", lambda: _mirror(settings), settings.asset_mirror),
        _aws(settings),
        _guard("dvc", _dvc),
        _guard("dvc repository", lambda: _dvc_repo(cwd)),
        _guard("dvc remote", lambda: _dvc_remote(cwd)),
    ]
    return [replace(c, detail=redact(c.detail)) for c in checks]


def _guard(name: str, check: Callable[[], tuple[str, str]], where: str | None = None) -> Check:
    """Run one check; any exception is that check's failure, in one line (after ``where`` it was)."""
    try:
        status, detail = check()
    except Exception as exc:  # noqa: BLE001 - a diagnostic reports every failure as a row
        first = redact(str(exc)).strip().splitlines()  # masked before it is cut short
        message = first[0][:200] if first else type(exc).__name__
        return Check(name, "fail", f"{where}: {message}" if where else message)
    return Check(name, status, detail)


def _torch() -> tuple[str, str]:
    import torch

    return "ok", f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs"


def _device(settings: Settings) -> tuple[str, str]:
    import torch

    from components.device import select_device

    device = select_device(settings.device)  # a UserError for a device that is not there
    if device.type != "cuda":
        gpu = "no CUDA device" if not torch.cuda.is_available() else f"CUDA present, RECRAFT_DEVICE={settings.device}"
        return "ok", f"{device} ({gpu}; bf16 autocast is used on CUDA only)"
    bf16 = "bf16 supported" if torch.cuda.is_bf16_supported() else "no bf16: autocast will be slow or fail"
    return "ok", f"{device}: {torch.cuda.get_device_name(device)}, {bf16}"


# ---------------------------------------------------------------- assets


def _wheel_state(wheel, cache: Path) -> str:
    """``verified``, ``corrupt`` (a cached copy fails its sha256) or ``missing``."""
    from components.wheels import cached_wheel

    if cached_wheel(wheel, cache) is not None:
        return "verified"
    return "corrupt" if any(cache.glob(f"{wheel.wheel_name}-*.whl")) else "missing"


def _assets(settings: Settings) -> list[Check]:
    """Each registered asset's wheels in the cache, then the workspace's extracted asset folders."""
    from components.asset_registry import ASSETS, wheels_of

    cache = settings.wheel_cache.expanduser()
    seen: dict = {}  # wheels shared by several assets (sktime, neuraloperator) are hashed once
    rows = []
    for name, asset in sorted(ASSETS.items()):
        wheels = wheels_of(asset)
        for wheel in wheels:
            if wheel not in seen:
                seen[wheel] = _wheel_state(wheel, cache)
        states = [seen[w] for w in wheels]
        if all(s == "verified" for s in states):
            row = ("ok", f"{len(wheels)} wheel(s) cached, sha256 verified")
        elif "corrupt" in states:
            row = ("warn", f"a cached wheel in {cache} fails its sha256; it is fetched again on use")
        else:
            row = ("warn", "not cached; fetched from the index or the S3 mirror on first use")
        rows.append(Check(f"asset {name}", *row))
    from components.layout import Layout

    layout = Layout(settings.resolved_root())
    for role, folder in (("body", layout.body_dir), ("source", layout.corpus_dir), ("target", layout.target_dir)):
        rows.append(_guard(f"extracted {role}", lambda folder=folder: _extracted(folder)))
    return rows


def _extracted(folder: Path) -> tuple[str, str]:
    from components.assets import read_manifest, verify_tree

    if not folder.exists():
        return "skip", f"{folder} not extracted yet (the assets stage does it)"
    verify_tree(folder)  # an AssetError names the missing or altered file
    return "ok", f"{len(read_manifest(folder))} files in {folder}, sha256 verified"


# ---------------------------------------------------------------- stores


def _tracking(settings: Settings) -> tuple[str, str]:
    uri = settings.resolved_tracking_uri()
    store = sqlite_file(uri)
    if store is not None and not store.is_file():
        if os.access(_existing_parent(store), os.W_OK):
            return "ok", f"{uri} (not created yet: the first run creates it; from {settings.source('tracking_uri')})"
        return "fail", f"{uri}: {store.parent} cannot be created or written"
    from flows.tracking.runs import count_experiments

    with _one_short_try():
        n = count_experiments(uri)
    return "ok", f"{uri} ({n} experiment(s); from {settings.source('tracking_uri')})"


def _registry(settings: Settings) -> Check:
    """The model registry MLflow uses: MLFLOW_REGISTRY_URI (read by MLflow itself) or the tracking store."""
    uri = os.environ.get("MLFLOW_REGISTRY_URI", "").strip()
    if uri:
        return Check("model registry", "ok", f"{uri} (from MLFLOW_REGISTRY_URI)")
    return Check(
        "model registry", "ok", f"{settings.resolved_tracking_uri()} (the tracking store; MLFLOW_REGISTRY_URI not set)"
    )


#: The AWS variables boto3 reads for credentials and region, reported by name (never by value).
_AWS_VARIABLES = (
    "AWS_PROFILE",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
)


def _aws(settings: Settings) -> Check:
    """Which AWS variables are set (names only) and which S3 endpoint is in force, by precedence."""
    endpoint = next(
        (
            (name, value)
            for name, value in (
                ("RECRAFT_S3_ENDPOINT_URL", settings.s3_endpoint_url),
                ("AWS_ENDPOINT_URL_S3", os.environ.get("AWS_ENDPOINT_URL_S3")),
                ("AWS_ENDPOINT_URL", os.environ.get("AWS_ENDPOINT_URL")),
            )
            if value
        ),
        None,
    )
    present = [name for name in _AWS_VARIABLES if os.environ.get(name)]
    if not present and endpoint is None:
        return Check("aws", "skip", "no AWS_* variable set (boto3 falls back to ~/.aws and instance roles)")
    where = f"S3 endpoint {endpoint[1]} (from {endpoint[0]})" if endpoint else "S3 endpoint: AWS"
    return Check("aws", "ok", f"{where}; set: {', '.join(present) or 'no credential variable'}")


@contextmanager
def _one_short_try() -> Iterator[None]:
    """MLflow's HTTP client gives up after one short try, not minutes of retries (restored after)."""
    wanted = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(_TIMEOUT_S)}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _existing_parent(path: Path) -> Path:
    for parent in path.parents:
        if parent.exists():
            return parent
    return Path("/")


def _optuna(url: str | None) -> tuple[str, str]:
    if not url:
        return "skip", "RECRAFT_OPTUNA_STORAGE not set (recraft tune uses WORKDIR/optuna.db)"
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    parsed = make_url(url)  # ArgumentError for what is not a database URL
    shown = parsed.render_as_string(hide_password=True)
    store = sqlite_file(url)
    if store is not None:
        if store.is_file():
            return "ok", f"{shown} (exists)"
        if os.access(_existing_parent(store), os.W_OK):
            return "ok", f"{shown} (created on first use)"
        return "fail", f"{shown}: {store.parent} cannot be created or written"
    args = {"connect_timeout": _TIMEOUT_S} if parsed.get_backend_name() == "postgresql" else {}
    try:
        engine = create_engine(parsed, connect_args=args)
    except ImportError as exc:  # SQLAlchemy 2.1 takes postgresql:// as psycopg 3
        return "fail", f"{shown}: {exc}; name the installed driver, e.g. postgresql+psycopg2://"
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return "fail", f"{shown}: {redact(str(exc)).strip().splitlines()[0][:200]}"
    finally:
        engine.dispose()
    return "ok", f"{shown} reachable"


def _artifacts(settings: Settings) -> tuple[str, str]:
    """An S3 artifact root for new experiments: its bucket, at the endpoint MLflow itself uses."""
    location = settings.resolved_artifact_location()
    if not location.startswith("s3://"):
        return "skip", f"{location} (RECRAFT_ARTIFACT_LOCATION; only S3 artifact roots are checked)"
    from flows.storage import s3_client

    client = s3_client(max_attempts=2, endpoint_env="MLFLOW_S3_ENDPOINT_URL")
    return _bucket(location, client, "MLFLOW_S3_ENDPOINT_URL")


def _bucket(url: str, client, endpoint_setting: str, label: str = "") -> tuple[str, str]:
    """:func:`flows.storage.check_bucket` as a row; a failure keeps its hint (how to fix it)."""
    from components.errors import UserError
    from flows.storage import check_bucket

    try:
        return "ok", label + check_bucket(url, client, endpoint_setting)
    except UserError as exc:
        return "fail", f"{label}{exc}" + (f" ({exc.hint})" if exc.hint else "")


def _prefect(url: str | None) -> tuple[str, str]:
    if not url:
        return "skip", (
            "PREFECT_API_URL not set: the stages of a `dvc repro` share one local server per workspace, "
            "stopped when idle; `recraft run` starts its own"
        )
    import httpx

    response = httpx.get(f"{url.rstrip('/')}/health", timeout=_TIMEOUT_S)
    if response.status_code != 200:
        return "fail", f"{url}/health answered HTTP {response.status_code}"
    return "ok", f"{url} healthy"


def _mirror(settings: Settings) -> tuple[str, str]:
    if not settings.asset_mirror:
        return "skip", "RECRAFT_ASSET_MIRROR not set"
    from flows.storage import WheelMirror, s3_client

    found = WheelMirror(settings.asset_mirror, s3_client(settings.s3_endpoint_url, max_attempts=2)).list()
    return "ok", f"{settings.asset_mirror} reachable ({len(found)} wheel(s))"


# ---------------------------------------------------------------- dvc


def _dvc() -> tuple[str, str]:
    exe = Path(sys.executable).with_name("dvc")
    where = str(exe) if exe.is_file() else shutil.which("dvc")
    try:
        installed = version("dvc")
    except PackageNotFoundError:
        installed = None
    if where is None or installed is None:
        return "fail", "dvc is not installed (pip install -e .), so `recraft repro` and `dvc repro` cannot run"
    return "ok", f"{installed} ({where})"


def _dvc_root(cwd: Path) -> Path | None:
    for folder in (cwd.resolve(), *cwd.resolve().parents):
        if (folder / ".dvc").is_dir():
            return folder
    return None


def _dvc_repo(cwd: Path) -> tuple[str, str]:
    root = _dvc_root(cwd)
    if root is not None:
        return "ok", f"repository at {root}"
    return "warn", f"{cwd.resolve()} is not in a DVC repository: `dvc repro` needs one (`recraft run` does not)"


def _dvc_remote(cwd: Path) -> tuple[str, str]:
    """The default DVC remote, when it is on S3: its bucket, with the remote's own endpoint and
    credentials (``dvc remote modify``), else boto3's chain, as dvc-s3 resolves them."""
    root = _dvc_root(cwd)
    if root is None:
        return "skip", "not in a DVC repository"
    from dvc.config import Config

    config = Config(dvc_dir=root / ".dvc")  # repo, local, global and system levels, validated
    name = config["core"].get("remote")
    if not name:
        return "skip", "no default remote (`dvc remote add -d NAME URL`): the cache stays on this machine"
    remote = config["remote"].get(name)
    if remote is None:
        return "fail", f"the default remote {name!r} is not defined (`dvc remote list`)"
    if not remote["url"].startswith("s3://"):
        return "skip", f"{name}: {remote['url']} (only S3 remotes are checked)"
    import boto3

    from flows.storage import s3_client

    session = boto3.session.Session(
        aws_access_key_id=remote.get("access_key_id"),
        aws_secret_access_key=remote.get("secret_access_key"),
        aws_session_token=remote.get("session_token"),
        profile_name=remote.get("profile"),
        region_name=remote.get("region"),
    )
    client = s3_client(remote.get("endpointurl"), max_attempts=2, session=session, endpoint_env=None)
    return _bucket(remote["url"], client, f"`dvc remote modify {name} endpointurl`", label=f"{name}: ")


# ---------------------------------------------------------------- report


_STYLE = {"ok": "green", "warn": "yellow", "skip": "dim", "fail": "bold red"}


def passed(checks: list[Check]) -> bool:
    """No check failed (warnings and skipped checks pass)."""
    return all(c.status != "fail" for c in checks)


def to_json(checks: list[Check]) -> str:
    """``{"ok": bool, "checks": [{"name", "status", "detail"}, ...]}``."""
    import json

    return json.dumps({"ok": passed(checks), "checks": [asdict(c) for c in checks]}, indent=2)


def print_table(checks: list[Check]) -> None:
    """The report as a table on stdout."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("check", "status", "detail", title="recraft doctor")
    for c in checks:
        table.add_row(c.name, Text(c.status, style=_STYLE[c.status]), Text(c.detail))  # Text: no markup in details
    Console(file=sys.stdout).print(table)
