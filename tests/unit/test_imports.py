"""Imports run one way: components/ never imports orchestration, tracking or storage clients."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc", "optuna", "boto3", "botocore", "flows"}
COMPONENTS = Path(__file__).resolve().parents[2] / "components"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_components_are_pure():
    files = sorted(COMPONENTS.rglob("*.py"))
    assert len(files) >= 10
    offenders = {f.name: sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_project_modules_import_without_cycles():
    """No module of components/ or flows/ imports itself back through others, not even through
    an import inside a function (which hides a cycle until that function runs)."""
    from tests.unit.test_dvc_deps import ROOT, _imports

    files = [
        p.relative_to(ROOT).as_posix() for pkg in ("components", "flows") for p in sorted((ROOT / pkg).rglob("*.py"))
    ]
    graph = {f: set(_imports(ast.parse((ROOT / f).read_text())).values()) - {f} for f in files}
    state: dict[str, str] = {}  # "open" while on the current path, "done" after

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join(path[path.index(nxt) :] + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for f in files:
        if f not in state:
            visit(f, [f])
    assert len(graph) >= 30


PROJECT = ("components", "flows", "benchmarks")


def test_no_module_uses_another_modules_private_names():
    """``_name`` is a module's own business: another module neither imports it nor reaches it as
    ``module._name``, so a private helper can change without breaking a caller it cannot see."""
    from tests.unit.test_dvc_deps import ROOT

    offences = []
    for path in sorted(p for pkg in PROJECT for p in (ROOT / pkg).rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = set()  # names bound to project modules
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PROJECT:
                offences += [f"{path.name}: from {node.module} import {a.name}" for a in node.names if _private(a.name)]
                modules |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                modules |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.split(".")[0] in PROJECT}
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):  # ``flows.tune._x``
                    base = base.value
                if isinstance(base, ast.Name) and base.id in modules:
                    offences.append(f"{path.name}: {ast.unparse(node)}")
    assert offences == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


# The tracking package: the run records (runs.py), the model registry (registry.py) and the pyfunc
# MLflow loads (pyfunc.py). Every other module goes through them.
TRACKING = {"flows/tracking/runs.py", "flows/tracking/registry.py", "flows/tracking/pyfunc.py"}


def test_only_the_tracking_modules_call_mlflow():
    from tests.unit.test_dvc_deps import ROOT

    files = [p for pkg in ("components", "flows", "benchmarks") for p in sorted((ROOT / pkg).rglob("*.py"))]
    callers = {p.relative_to(ROOT).as_posix() for p in files if "mlflow" in _imported_roots(p)}
    assert callers == TRACKING, sorted(callers ^ TRACKING)
