"""Device selection, done once at the entry point."""

from __future__ import annotations

import torch

from components.errors import UserError

__all__ = ["select_device"]


def select_device(name: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU. ``cpu``, ``cuda`` and ``cuda:N`` are taken as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise UserError(f"RECRAFT_DEVICE={name!r} is not a device; use auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"RECRAFT_DEVICE={name!r} but CUDA is not available on this machine")
    return device
