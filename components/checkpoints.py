"""Self-describing checkpoints: safetensors weights plus the JSON config that built them.

Loading never unpickles: safetensors holds raw tensors only, and the config is JSON. A file that
is not valid safetensors (a crafted pickle, a truncated write) is refused with a clear error.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from components.atomic import atomic_dir, atomic_path
from components.errors import CheckpointError
from components.faults import fault_point

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "save_tensors",
    "load_tensors",
    "optimizer_state",
    "load_optimizer_state",
    "TrainingCheckpoint",
]


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors to a safetensors file atomically (contiguous CPU copies)."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; anything else is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist", hint="run the stage that writes it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({exc})",
            hint="checkpoints are never unpickled; re-create it by running its stage again",
        ) from exc


def save_checkpoint(
    directory: str | Path, module: torch.nn.Module, config: dict, extra_json: dict[str, dict] | None = None
) -> None:
    """Write ``weights.safetensors``, ``config.json`` (and ``extra_json`` files) into ``directory``.

    The directory is replaced atomically: it holds the complete checkpoint or the previous one.
    Tied or shared parameters are stored once per name, as ``state_dict`` lists them.
    """
    with atomic_dir(directory) as tmp:
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}, str(tmp / "weights.safetensors")
        )
        for rel, obj in {"config.json": config, **(extra_json or {})}.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def load_checkpoint(directory: str | Path, module: torch.nn.Module, expected: dict | None = None) -> dict:
    """Load weights into ``module``; check ``config.json`` against ``expected`` keys first.

    Returns:
        The checkpoint's config.

    Raises:
        CheckpointError: missing or corrupt files, a config that differs from ``expected``, or
            weights whose names or shapes do not fit ``module``.
    """
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {directory / 'config.json'}: {exc}") from exc
    for key, value in (expected or {}).items():
        if config.get(key) != value:
            raise CheckpointError(
                f"checkpoint {directory} was written for {key}={config.get(key)!r}, expected {value!r}",
                hint="the checkpoint comes from another configuration; re-run its stage",
            )
    state = load_tensors(directory / "weights.safetensors")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"weights in {directory} do not fit the model: {str(exc)[:300]}") from exc
    return config


# ---------------------------------------------------------------- resumable training state


def optimizer_state(opt: torch.optim.Optimizer, prefix: str = "opt") -> tuple[dict[str, torch.Tensor], dict]:
    """An optimiser's state as flat tensors plus JSON (no pickle): ``prefix/<param>/<name>``."""
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, entries in sd["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict, prefix: str = "opt"
) -> None:
    """Inverse of :func:`optimizer_state`."""
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(f"{prefix}/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, entries in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(entries)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class TrainingCheckpoint:
    """A resumable training state in ``directory``: ``state.safetensors`` + ``state.json``.

    The directory is replaced atomically on every save, so a process killed at any moment
    leaves either the previous checkpoint or the new one, never a mix. ``fingerprint`` names the
    configuration and inputs the state belongs to; a checkpoint with another fingerprint is
    ignored (and replaced by the next save), so a changed param never resumes stale weights.
    A checkpoint that cannot be read (a disk fault, a hand edit) is moved aside, never deleted,
    and training starts afresh: a re-run never trips over the same file again.
    """

    def __init__(self, directory: str | Path, fingerprint: str) -> None:
        self.directory = Path(directory)
        self.fingerprint = fingerprint

    def save(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        with atomic_dir(self.directory) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp / "state.safetensors"))
            fault_point(self.directory.name, "save")  # test-only (components.faults): a half-written state
            (tmp / "state.json").write_text(json.dumps({"fingerprint": self.fingerprint, **meta}))

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The saved state, or ``None`` when there is none for this fingerprint.

        An unreadable checkpoint also gives ``None``, after it is set aside (see the class doc)
        with a one-line warning. Nothing is ever unpickled.
        """
        meta_path = self.directory / "state.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            self._set_aside(meta_path, exc)
            return None
        if not isinstance(meta, dict) or meta.get("fingerprint") != self.fingerprint:
            return None
        try:
            return load_tensors(self.directory / "state.safetensors"), meta
        except CheckpointError as exc:
            self._set_aside(self.directory / "state.safetensors", exc)
            return None

    def _set_aside(self, bad: Path, exc: Exception) -> None:
        """Rename the checkpoint directory to ``<directory>.corrupt-<time>`` (next to it, so the
        next save and the stage's final clean-up leave it alone) and say so in one line."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        aside = self.directory.with_name(f"{self.directory.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.directory.with_name(f"{self.directory.name}.corrupt-{stamp}-{n}")
        self.directory.rename(aside)
        reason = " ".join(str(exc).split())[:200]
        logging.getLogger(__name__).warning(
            "checkpoint %s is unreadable (%s); moved it aside to %s and training restarts from scratch",
            bad,
            reason,
            aside / bad.name,
        )

    def clear(self) -> None:
        """Remove the checkpoint (after the stage's outputs are written)."""
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
