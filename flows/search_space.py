"""The search space of ``recraft tune``: which params a trial varies and how, a trial's values as
params, and the tuned values the pipeline reads back (``params.tuned.yaml``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from components.config import Params
from components.errors import UserError
from flows.params import parse_params

__all__ = ["SPACE", "suggest", "with_values", "tuned_sections", "apply_tuned", "current_values", "study_name"]

# Search-space entry -> (params section, key, scale). Ranges and choices live in ``params.tune``.
SPACE: dict[str, tuple[str, str, str]] = {
    "lambda_fa": ("align", "lambda_fa", "log"),
    "lambda_fld": ("align", "lambda_fld", "log"),
    "eps": ("align", "eps", "log"),
    "tau": ("source", "tau", "linear"),
    "fld_variant": ("align", "fld_variant", "choice"),
    "schedule": ("align", "schedule", "choice"),
    "align_epochs": ("align", "epochs", "int"),
    "align_lr": ("align", "lr", "log"),
    "fit_lr": ("fit", "lr", "log"),
}


def suggest(trial, base: Params) -> Params:
    """The trial's params: ``base`` with each searched value drawn from ``trial`` (pure)."""
    values: dict[str, Any] = {}
    for name, (section, key, scale) in SPACE.items():
        space = getattr(base.tune, name)
        if space is None:
            continue
        if scale == "choice":
            value = trial.suggest_categorical(name, list(space))
        elif scale == "int":
            value = trial.suggest_int(name, int(space[0]), int(space[1]))
        else:
            value = trial.suggest_float(name, float(space[0]), float(space[1]), log=scale == "log")
        values[f"{section}.{key}"] = value
    return with_values(base, values)


def with_values(base: Params, values: dict[str, Any]) -> Params:
    """``base`` with ``{"section.key": value}`` set, validated like a params file."""
    raw = base.model_dump(mode="json")
    for dotted, value in values.items():
        section, _, key = dotted.partition(".")
        if key:
            raw[section][key] = value
        else:  # a top-level key such as use_tuned
            raw[section] = value
    return parse_params(raw, source="tuned values")


def tuned_sections(best: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Optuna's ``best_params`` as params sections, e.g. ``{"align": {"lambda_fa": 2.1}}``."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in best.items():
        section, key, _ = SPACE[name]
        out.setdefault(section, {})[key] = value
    return out


def apply_tuned(params: Params, path: Path) -> Params:
    """``params`` with the values of a ``params.tuned.yaml`` (``use_tuned: true``)."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise UserError(
            f"use_tuned is true but {path} cannot be read ({exc.strerror})",
            hint="run `recraft tune` (or `dvc repro tune`) first, or set use_tuned: false",
        ) from exc
    values = raw.get("values", {}) if isinstance(raw, dict) else None
    if not isinstance(values, dict):
        raise UserError(f"{path}: expected a 'values' mapping of params sections")
    flat = {f"{s}.{k}": v for s, keys in values.items() for k, v in (keys or {}).items()}
    return with_values(params, flat)


def current_values(params: Params) -> dict[str, Any]:
    """The searched names' values in ``params`` itself: the study's baseline trial."""
    return {
        name: getattr(getattr(params, section), key)
        for name, (section, key, _) in SPACE.items()
        if getattr(params.tune, name) is not None
    }


def study_name(params: Params) -> str:
    """Stable per (params that change results, search space, budget): reruns continue the study."""
    raw = params.model_dump(mode="json")
    raw["tune"] = {k: v for k, v in raw["tune"].items() if k not in ("n_trials", "n_workers", "confirm_top")}
    raw.pop("use_tuned", None)
    digest = hashlib.sha256(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:10]
    from components.tasks import task_slug

    return f"{task_slug(params.task)}-{params.method}-seed{params.seed}-{digest}"
