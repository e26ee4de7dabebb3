"""Self-describing checkpoints: safetensors weights plus the JSON config that built them.

Loading never unpickles: safetensors holds raw tensors only, and the config is JSON. A file that
is not valid safetensors (a crafted pickle, a truncated write) is refused with a clear error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from components.atomic import atomic_path, write_json
from components.errors import CheckpointError

__all__ = ["save_checkpoint", "load_checkpoint", "save_tensors", "load_tensors"]


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


def save_checkpoint(directory: str | Path, module: torch.nn.Module, config: dict) -> None:
    """Write ``weights.safetensors`` and ``config.json`` into ``directory``.

    Tied or shared parameters are stored once per name, as ``state_dict`` lists them.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / "weights.safetensors", module.state_dict())
    write_json(directory / "config.json", config)


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
