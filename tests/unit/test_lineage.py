"""Lineage hashes agree with DVC's own, and the code's commit is read from its checkout only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from flows import lineage

BIN = Path(sys.executable).parent


def test_dvc_md5_is_the_hash_dvc_writes_for_a_file_and_a_directory(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    np.savez(data / "train.npz", x=np.arange(10.0))
    (data / "meta.json").write_text('{"a": 1}\n')
    (data / "sub" / "b.txt").write_text("text\r\nwith a CR\n")  # DVC 3 hashes bytes as they are
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"], [str(BIN / "dvc"), "add", "-q", "data"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True, capture_output=True, timeout=120)
    out = yaml.safe_load((tmp_path / "data.dvc").read_text())["outs"][0]
    assert lineage.dvc_md5(data) == out["md5"]
    manifest = tmp_path / ".dvc" / "cache" / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
    files = {entry["relpath"]: entry["md5"] for entry in json.loads(manifest.read_text())}
    assert files["train.npz"] == lineage.dvc_md5(data / "train.npz")
    assert set(files) == {"train.npz", "meta.json", "sub/b.txt"}


def test_code_tags_name_this_checkout_or_nothing(monkeypatch, tmp_path):
    lineage.code_tags.cache_clear()
    tags = lineage.code_tags()
    head = subprocess.run(["git", "-C", str(lineage.CODE_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert tags.get("mlflow.source.git.commit") == (head.stdout.strip() if head.returncode == 0 else None)
    # Code inside some other repository (an installed package in a project's venv): no commit.
    outer = tmp_path / "project"
    (outer / "site-packages").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=outer, check=True)
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "x"],
        cwd=outer,
        check=True,
    )
    monkeypatch.setattr(lineage, "CODE_ROOT", outer / "site-packages")
    lineage.code_tags.cache_clear()
    assert lineage.code_tags() == {}
    lineage.code_tags.cache_clear()


def test_lock_hashes_read_dvc_lock(tmp_path):
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  prepare:\n    cmd: x\n    outs:\n"
        "    - path: data/prepared\n      hash: md5\n      md5: abc.dir\n"
    )
    assert lineage.lock_hashes(tmp_path) == {"data/prepared": "abc.dir"}
    assert lineage.lock_hashes(tmp_path / "nowhere") == {}
