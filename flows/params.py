"""Read ``params.yaml`` once, apply ``--set`` overrides, and validate into frozen :class:`Params`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from components.config import Params
from components.errors import UserError

__all__ = ["load_params", "parse_params", "apply_overrides", "flatten"]


def load_params(path: str | Path, overrides: list[str] | None = None, complete: bool = False) -> Params:
    """Parse and validate a params file, then apply ``section.key=value`` overrides.

    With ``complete`` (what ``dvc.yaml``'s stages use), every top-level key and section must be
    in the file: DVC tracks each of them, so a missing one is refused rather than defaulted.

    Raises:
        UserError: the file is missing or not valid YAML, an override is malformed, or a key is
            unknown, mistyped or out of range (the message names the key).
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"cannot read params file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    missing = [k for k in Params.model_fields if k not in raw]
    if complete and missing:
        raise UserError(
            f"{path}: missing {', '.join(repr(m) for m in missing)}; a params file for dvc repro needs "
            f"every section: {', '.join(Params.model_fields)}",
            hint="copy the missing sections from the project's params.yaml",
        )
    return parse_params(apply_overrides(raw, overrides or []), source=str(path))


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``raw`` with each ``a.b=value`` set (values parsed as YAML scalars)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r} is not of the form section.key=value")
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"override {item!r}: {part!r} is not a section")
            node[part] = child = dict(child)
            node = child
        node[parts[-1]] = yaml.safe_load(value) if value else None
    return out


def parse_params(raw: dict[str, Any], source: str = "params") -> Params:
    """Validate a params mapping; the first error names its key, e.g. ``align.lambda_fa``."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            got = f" (got {err['input']!r})" if err["type"] != "extra_forbidden" and "input" in err else ""
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {msg}{got}")
        raise UserError(f"{source}: " + "; ".join(lines), hint="see components/config.py for every key") from exc


def flatten(params: Params) -> dict[str, Any]:
    """``{"align.lambda_fa": 1.0, ...}`` for logging."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            out[prefix] = value

    walk("", params.model_dump())
    return out
