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
    files = sorted(COMPONENTS.glob("*.py"))
    assert len(files) >= 10
    offenders = {f.name: sorted(_imported_roots(f) & FORBIDDEN) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}
