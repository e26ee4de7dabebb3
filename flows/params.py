"""Read ``params.yaml`` once, apply ``--set`` overrides and the task's ``per_task`` values, and
validate into frozen :class:`Params`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from components.config import Params, per_task_problem
from components.errors import UserError

__all__ = [
    "load_params",
    "read_params_file",
    "parse_params",
    "apply_overrides",
    "with_overrides",
    "task_values",
    "flatten",
]


def load_params(path: str | Path, overrides: list[str] | None = None, complete: bool = False) -> Params:
    """Parse and validate a params file, then apply ``section.key=value`` overrides.

    With ``complete`` (what ``dvc.yaml``'s stages use), every top-level key and section must be
    in the file: DVC tracks each of them, so a missing one is refused rather than defaulted.

    Raises:
        UserError: the file is missing or not valid YAML, an override is malformed, or a key is
            unknown, mistyped or out of range (the message names the key).
    """
    raw = read_params_file(path, complete)
    overrides = overrides or []
    overridden = tuple(item.partition("=")[0] for item in overrides)
    return _validate(task_values(with_overrides(raw, overrides)), path, raw, overridden)


def read_params_file(path: str | Path, complete: bool = False) -> dict[str, Any]:
    """A params file's mapping, unvalidated (see :func:`load_params` for ``complete``)."""
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
    return raw


def with_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """:func:`apply_overrides`, and each overridden key dropped from every ``per_task`` entry:
    a value the user sets explicitly wins over the one a task's entry holds."""
    out = apply_overrides(raw, overrides)
    keys = {item.partition("=")[0] for item in overrides}
    entries = _per_task_entries(out)
    if keys and isinstance(entries, dict):
        out["per_task"] = {
            task: {k: v for k, v in entry.items() if k not in keys} if isinstance(entry, dict) else entry
            for task, entry in entries.items()
        }
    return out


def _per_task_entries(raw: dict[str, Any]) -> Any:
    """``raw``'s ``per_task`` section, or the schema's when the mapping has none (unvalidated)."""
    if "per_task" in raw:
        return raw["per_task"]
    return Params.model_fields["per_task"].get_default(call_default_factory=True)


def task_values(raw: dict[str, Any]) -> dict[str, Any]:
    """``raw`` with the ``per_task`` entry of its ``task`` applied to the sections.

    Applied once, where params are read (a params file, the defaults, a benchmark cell): params
    rebuilt from a validated :class:`Params` (a trial's, the tuned values) already hold them, and
    applying them again would undo the values set since. A key the schema refuses is left for
    validation to report in the entry's own words.
    """
    entries = _per_task_entries(raw)
    entry = entries.get(raw.get("task", Params.model_fields["task"].default)) if isinstance(entries, dict) else None
    if not isinstance(entry, dict):
        return raw
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for dotted, value in entry.items():
        if per_task_problem(dotted) is None:
            section, _, key = dotted.partition(".")
            out[section] = {**(out.get(section) or {}), key: value}
    return out


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


def parse_params(raw: dict[str, Any], source: str | None = None) -> Params:
    """Validate a params mapping; each error names its key, e.g. ``align.lambda_fa``.

    Args:
        raw: the sections and keys.
        source: the params file ``raw`` was read from, named in messages; a label that is not a
            file (such as ``"defaults"``) is not: it would not tell the user where to look.
    """
    file = Path(source) if source and Path(source).is_file() else None
    return _validate(raw, file, raw if file else {}, ())


def _validate(raw: dict[str, Any], file: Path | None, from_file: dict[str, Any], overridden: tuple[str, ...]) -> Params:
    """:class:`Params` from ``raw``, or one :class:`UserError` listing every bad key in our words.

    An error is prefixed with ``file`` when its key was set there and not by an override.
    """
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        problems, hints = [], []
        for err in exc.errors():
            text, hint = _problem(err)
            in_file = file is not None and _holds(from_file, err["loc"]) and not _overridden(err["loc"], overridden)
            problems.append(f"{file}: {text}" if in_file else text)
            if hint and hint not in hints:
                hints.append(hint)
        raise UserError("; ".join(problems), hint="; ".join(hints) or "see components/config.py for every key") from exc


# pydantic's error types -> what the value must be, in the words of a params file.
_MUST_BE = {
    "int_parsing": "a whole number",
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "text",
    "tuple_type": "a list, e.g. [low, high]",
    "list_type": "a list",
    "model_type": "a section of keys",
    "dict_type": "a section of keys",
    "model_attributes_type": "a section of keys",
}


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    """One pydantic error as ``key: what is wrong (got VALUE)``, and the hint of our own validators."""
    loc = err["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(top level)"
    kind, ctx = err["type"], err.get("ctx") or {}
    got = f" (got {_short(err['input'])})" if "input" in err else ""
    if kind == "extra_forbidden":
        return f"{key}: unknown key", ""
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        # Our own validators: their message already says what is wrong and names the value.
        error = ctx["error"]
        text = str(error)
        hint = getattr(error.__cause__, "hint", "")
        name = str(loc[-1]) if loc else ""
        named = name and text.startswith(name) and text[len(name) : len(name) + 1] in (" ", ".", "=", ":")
        return (text if named else f"{key}: {text}"), hint
    if kind in _MUST_BE:
        return f"{key}: must be {_MUST_BE[kind]}{got}", ""
    if kind == "literal_error":
        return f"{key}: must be {ctx['expected']}{got}", ""
    if kind in ("too_long", "too_short"):
        bound = "at most" if kind == "too_long" else "at least"
        limit = ctx.get("max_length" if kind == "too_long" else "min_length")
        return f"{key}: must have {bound} {limit} items{got}", ""
    msg = err["msg"]
    msg = "must be " + msg.removeprefix("Input should be ") if msg.startswith("Input should be ") else msg
    return f"{key}: {msg}{got}", ""


def _holds(mapping: dict[str, Any], loc: tuple) -> bool:
    """Whether ``mapping`` (a params file's contents) has a value at ``loc``."""
    node: Any = mapping
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            return False
    return True


def _overridden(loc: tuple, overridden: tuple[str, ...]) -> bool:
    """Whether an override set the key at ``loc``, a key inside it, or the section holding it."""
    dotted = ".".join(p for p in loc if isinstance(p, str))
    return any(o == dotted or o.startswith(f"{dotted}.") or dotted.startswith(f"{o}.") for o in overridden)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
