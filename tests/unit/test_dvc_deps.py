"""dvc.yaml lists, for each stage, every project module whose code can change that stage's outputs.

Otherwise editing such a module (say the bound terms of ``evaluate``) leaves ``dvc repro`` saying
"up to date" over a stale result. The modules a stage needs are read off the code: the names its
flow function (in flows/stages/NAME.py, with the helpers it calls) uses, mapped to the modules they
come from, then every project module those import, transitively, and the packages' ``__init__``
modules that importing them runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "flows")

# Modules that only record, report or guard a run: editing them cannot change a stage's outputs.
RECORD_ONLY = {
    "components/atomic.py",
    "components/errors.py",
    "components/faults.py",
    "components/layout.py",
    "flows/lineage.py",
    "flows/lock.py",
    "flows/prefect_local.py",
    "flows/progress.py",
    "flows/settings.py",
    "flows/supervise.py",
    "flows/tracking/runs.py",
}
# What every ``recraft stage NAME`` runs through before the stage's own code: the params it
# reads (defaults included), the dispatch and the device it picks.
ENTRY = ("components/config.py", "components/device.py", "flows/params.py", "flows/pipeline.py")
# Modules that hold every stage: what they import is followed per stage function, not wholesale.
PER_FUNCTION = {"flows/pipeline.py", "components/recipe.py"}
STAGES = ("assets", "prepare", "source", "tune", "align", "fit", "evaluate")


def _module_file(module: str) -> str | None:
    """``components.model`` -> ``components/model.py`` (or a package's ``__init__.py``); None outside."""
    if module.split(".")[0] not in PACKAGES:
        return None
    path = Path(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if (ROOT / candidate).exists():
            return candidate.as_posix()
    return None


def _imports(node: ast.AST) -> dict[str, str]:
    """Every project import under ``node``: the bound name -> the module file it comes from."""
    return {name: found for name, (found, _) in _named_imports(node).items()}


def _named_imports(node: ast.AST) -> dict[str, tuple[str, str | None]]:
    """Every project import under ``node``: the bound name -> (module file, the name imported
    from it, or None when the bound name is the module itself)."""
    out: dict[str, tuple[str, str | None]] = {}
    for n in ast.walk(node):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            for alias in n.names:
                sub = _module_file(f"{n.module}.{alias.name}")  # ``from components import recipe``
                found = sub or _module_file(n.module)
                if found:
                    out[alias.asname or alias.name] = (found, None if sub else alias.name)
        elif isinstance(n, ast.Import):
            for alias in n.names:
                found = _module_file(alias.name)
                if found:
                    out[alias.asname or alias.name.split(".")[0]] = (found, None)
    return out


def _package_inits(file: str) -> list[str]:
    """The ``__init__`` modules importing ``file`` runs, those that hold more than a docstring."""
    out = []
    for parent in Path(file).parents:
        init = ROOT / parent / "__init__.py"
        if parent != Path(".") and init.exists():
            body = ast.parse(init.read_text()).body
            if body and not (len(body) == 1 and isinstance(body[0], ast.Expr)):
                out.append((parent / "__init__.py").as_posix())
    return out


def _closure(files: set[str]) -> set[str]:
    """``files`` and every project module they import (at module level or inside functions)."""
    seen: set[str] = set()
    todo = list(files)
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += _package_inits(f)
        if f not in PER_FUNCTION:
            todo += _imports(ast.parse((ROOT / f).read_text())).values()
    return seen


def _parsed(file: str) -> tuple[dict[str, ast.AST], dict[str, tuple[str, str | None]]]:
    """A module's top-level functions and classes, and its module-level project imports."""
    tree = ast.parse((ROOT / file).read_text())
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    top = {n.name: n for n in tree.body if isinstance(n, kinds)}
    imports = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[])
    return top, _named_imports(imports)


def _stage_modules(stage: str) -> set[str]:
    """The module files stage ``stage``'s flow (``flows/stages/STAGE.py``) needs: the functions it
    calls in its own module and in the modules that hold every stage (:data:`PER_FUNCTION`: the
    recipe), followed function by function, and every other module they use, transitively.
    The search of ``tune`` runs whole trials through the recipe: every function of it counts."""
    from flows.pipeline import TUNED_STAGES

    start = [(f"flows/stages/{stage}.py", stage)]
    if stage in TUNED_STAGES:  # with use_tuned, these stages read params.tuned.yaml through apply_tuned
        start.append(("flows/search_space.py", "apply_tuned"))
    if stage == "tune":
        start += [("components/recipe.py", name) for name in _parsed("components/recipe.py")[0]]
    return _reached(start)


def _reached(start: list[tuple[str, str]]) -> set[str]:
    """The module files the functions ``start`` ((file, name) pairs) need, as :func:`_stage_modules`."""
    files: set[str] = set()
    seen: set[tuple[str, str]] = set()
    todo = list(start)
    while todo:
        file, name = todo.pop()
        if (file, name) in seen:
            continue
        seen.add((file, name))
        files.add(file)
        top, imported = _parsed(file)
        node = top[name]
        imported = {**imported, **_named_imports(node)}  # function-local imports too
        for n in ast.walk(node):
            if isinstance(n, ast.Name) and n.id in top:
                todo.append((file, n.id))
            elif isinstance(n, ast.Name) and n.id in imported:
                found, original = imported[n.id]
                if found not in PER_FUNCTION:
                    files.add(found)
                elif original is not None:  # ``from components.recipe import fit``
                    todo.append((found, original))
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in imported:
                found, original = imported[n.value.id]
                if found in PER_FUNCTION and original is None:  # ``recipe.fit``
                    todo.append((found, n.attr))
    return _closure(files | set(ENTRY))


def _code_deps(stage: str) -> set[str]:
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]
    return {d for d in spec.get("deps", []) if d.endswith(".py")}


@pytest.mark.parametrize("stage", STAGES)
def test_dvc_yaml_lists_exactly_the_modules_a_stage_runs(stage):
    """Missing: a stale result after an edit. Extra: a stage re-run by an edit it cannot see."""
    needed = _stage_modules(stage) - RECORD_ONLY
    listed = _code_deps(stage)
    missing, extra = sorted(needed - listed), sorted(listed - needed)
    assert not missing, f"dvc.yaml stage {stage!r} should list these deps: {missing}"
    assert not extra, f"dvc.yaml stage {stage!r} lists deps its code does not use: {extra}"


def test_the_analysis_sees_the_bound_terms_of_evaluate():
    """The guard itself: evaluate reaches components/bound.py through the recipe's
    ``bound_terms`` and the registry through a function-local import; prepare reaches neither."""
    evaluate, prepare = _stage_modules("evaluate"), _stage_modules("prepare")
    assert {"components/bound.py", "flows/tracking/registry.py", "flows/stages/evaluate.py"} <= evaluate
    assert {"flows/stages/__init__.py", "flows/stages/context.py"} <= evaluate
    assert not {"flows/stages/fit.py", "flows/stages/align.py"} & evaluate
    assert "flows/tracking/registry.py" not in prepare and "components/bound.py" not in prepare


def test_recraft_run_fingerprints_the_params_dvc_yaml_lists():
    """``recraft run`` skips a finished stage by a hash of the params dvc.yaml lists for it (read
    from dvc.yaml itself); each listed key names a section or a key of params.yaml."""
    from components.config import Params
    from flows.pipeline import stage_fingerprint, stage_params

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    listed = stage_params()
    assert listed.keys() == stages.keys()
    raw = Params().model_dump(mode="json")
    for stage, keys in listed.items():
        assert set(keys) == {p for p in stages[stage].get("params", []) if isinstance(p, str)}, stage
        for key in keys:
            section, _, name = key.partition(".")
            assert section in raw and (not name or name in raw[section]), (stage, key)
    # A value a stage lists changes its fingerprint; one it does not list leaves it alone.
    base = Params()
    changed = base.model_copy(update={"fit": base.fit.model_copy(update={"lr": base.fit.lr * 2})})
    assert stage_fingerprint(changed, "fit") != stage_fingerprint(base, "fit")
    assert stage_fingerprint(changed, "align") == stage_fingerprint(base, "align")
