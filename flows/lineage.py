"""Which code and which data made a run: what the pipeline run and its registered model record.

- The code: the git commit of the checkout this package runs from (``mlflow.source.git.commit``,
  the tag the MLflow UI shows as the run's source version) and whether tracked files differed
  from it (``recraft.git.dirty``). Nothing is recorded when the package is not a git checkout
  (an installed wheel): a commit of some enclosing repository would be a wrong answer.
- The data and the model: DVC's own hashes of the prepared splits (``data/prepared``) and of the
  fitted model (``models/model``), computed here the way DVC 3 computes them (a file's md5; a
  directory's md5 of its sorted manifest, suffixed ``.dir``), so that a run made outside DVC
  (``recraft run``) carries the hash ``dvc repro`` would have written to ``dvc.lock``. Under DVC
  the two agree; :func:`lock_hashes` reads the lock file for comparison.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from functools import lru_cache
from pathlib import Path

__all__ = ["CODE_ROOT", "code_tags", "dvc_md5", "lock_hashes", "lineage_tags"]

CODE_ROOT = Path(__file__).resolve().parent.parent
_CHUNK = 1 << 20


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(CODE_ROOT), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):  # no git, or a hung filesystem: no code lineage
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


@lru_cache(maxsize=1)
def code_tags() -> dict[str, str]:
    """``mlflow.source.git.commit`` and ``recraft.git.dirty`` of the code's checkout, and the
    source's name and type the MLflow UI shows the commit with; ``{}`` outside a checkout."""
    top = _git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != CODE_ROOT:
        return {}
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    if not commit or status is None:  # a repository without commits
        return {}
    return {
        "mlflow.source.git.commit": commit,
        "recraft.git.dirty": "true" if status else "false",
        # The UI shows the commit beside the source's name (the checkout's folder).
        "mlflow.source.name": str(CODE_ROOT),
        "mlflow.source.type": "LOCAL",
    }


def _file_md5(path: Path) -> str:
    stat = path.stat()
    return _md5_of(str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=256)
def _md5_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """The md5 of a file's bytes, once per (path, inode, size, mtime): evaluate hashes the prepared
    folder and then each split in it. An atomic rewrite (a new inode) is hashed again."""
    del inode, size, mtime_ns  # the cache key only
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def dvc_md5(path: Path) -> str:
    """DVC 3's hash of ``path``: the md5 of a file's bytes, or for a directory the md5 of the JSON
    list of its files' ``{"md5", "relpath"}`` sorted by relative path, with ``.dir`` appended."""
    if path.is_file():
        return _file_md5(path)
    files = sorted((p for p in path.rglob("*") if p.is_file()), key=lambda p: p.relative_to(path).as_posix())
    manifest = [{"md5": _file_md5(p), "relpath": p.relative_to(path).as_posix()} for p in files]
    return hashlib.md5(json.dumps(manifest).encode(), usedforsecurity=False).hexdigest() + ".dir"


def lock_hashes(workspace: Path) -> dict[str, str]:
    """``{out path: md5}`` of every stage output in ``workspace/dvc.lock`` (``{}`` without one)."""
    import yaml

    lock = workspace / "dvc.lock"
    if not lock.is_file():
        return {}
    try:
        stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    except yaml.YAMLError:  # a lock file being rewritten by dvc: the computed hashes stand alone
        return {}
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}


def lineage_tags(workspace: Path, outputs: dict[str, Path]) -> dict[str, str]:
    """The code tags, and ``recraft.dvc.<name>`` = :func:`dvc_md5` of each existing output
    (``outputs``: a short name -> its path inside ``workspace``)."""
    tags = dict(code_tags())
    for name, path in outputs.items():
        if path.exists():
            tags[f"recraft.dvc.{name}"] = dvc_md5(path)
    return tags
