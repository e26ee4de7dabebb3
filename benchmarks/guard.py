"""Results guard for refactors: the same code paths, params and seed give bit-identical results.

    python benchmarks/guard.py record guard.json [--default-dna] [--only NAME ...] [--code DIR]
    python benchmarks/guard.py check guard.json [--code DIR]

``record`` runs ``recraft run`` for one small case per task type and method (and, with
``--default-dna``, the default dna pipeline) at one torch thread, and writes each case's
``val/*``, ``test/*``, ``bound/*`` and ``reference/*`` numbers and the sha256 of every weight file
under ``models/``. ``check`` runs the recorded cases again and lists every number or file that
differs (exit 1), or says that all are identical (exit 0). ``--code DIR`` runs the project's
code from another checkout (e.g. the commit before a refactor), so both sides of a change can be
recorded with this one script. Floats are compared exactly: a refactor that only moves code
changes no bit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import TINY  # noqa: E402  (the suite's tiny budget, shared)

SMALL = [*TINY, "prepare.max_train=160"]
# name -> (task, method, overrides): every task type, and every method on dna.
CASES: dict[str, tuple[str, str, list[str]]] = {
    "dna-recraft": ("dna", "recraft", SMALL),
    "dna-nft": ("dna", "nft", SMALL),
    "dna-fa": ("dna", "fa", SMALL),
    "dna-orca": ("dna", "orca", SMALL),
    "dna-scratch": ("dna", "scratch", SMALL),
    "vowels-recraft": ("vowels", "recraft", SMALL),
    "burgers-recraft": ("burgers", "recraft", SMALL),
    "darcy-recraft": ("darcy", "recraft", SMALL),
    "tecator-recraft": ("tecator", "recraft", SMALL),
}
DEFAULT_DNA = ("dna", "recraft", [])
KEPT = ("val/", "test/", "bound/", "reference/")


def run_case(task: str, method: str, overrides: list[str], code: Path, work: Path) -> dict:
    """``recraft run`` of one case in ``work`` with the code under ``code``; its numbers and hashes."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for key in [k for k in env if k.startswith(("MLFLOW_", "RECRAFT_"))]:
        del env[key]  # the workspace's own SQLite store, not a caller's
    args = [sys.executable, "-c", "from flows.supervise import main; main()", "run", "--task", task]
    args += ["--method", method, "--seed", "0", "--workdir", str(work / "ws")]
    for override in overrides:
        args += ["--set", override]
    started = time.perf_counter()
    done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = done.stdout[-2000:] + done.stderr[-2000:]
        raise SystemExit(f"{task}/{method} failed (exit {done.returncode}):\n{tail}")
    result = json.loads((work / "ws" / "metrics" / "evaluate.json").read_text())
    numbers = {k: v for k, v in result.items() if k.startswith(KEPT) and isinstance(v, (int, float))}
    weights = {
        p.relative_to(work / "ws").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((work / "ws" / "models").rglob("*.safetensors"))
    }
    return {"numbers": numbers, "weights": weights, "seconds": round(time.perf_counter() - started, 1)}


def run_all(names: list[str], code: Path) -> dict[str, dict]:
    cases = {**CASES, "default-dna": DEFAULT_DNA}
    out = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"guard-{name}-") as tmp:
            out[name] = run_case(*cases[name], code, Path(tmp))
        print(f"{name}: {out[name]['seconds']} s", flush=True)
    return out


def differences(recorded: dict[str, dict], now: dict[str, dict]) -> list[str]:
    """Every number or weight file of a recorded case that is missing or differs now."""
    lines = []
    for name, case in recorded.items():
        for kind in ("numbers", "weights"):
            for key, value in case[kind].items():
                got = now[name][kind].get(key)
                if got != value:
                    lines.append(f"{name}: {key}: recorded {value!r}, now {got!r}")
            for key in now[name][kind].keys() - case[kind].keys():
                lines.append(f"{name}: {key}: new, {now[name][kind][key]!r}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("record", "check"))
    parser.add_argument("file", type=Path)
    parser.add_argument("--default-dna", action="store_true", help="also the default dna pipeline (minutes)")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose code runs (default: this one)")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="record just these cases (e.g. default-dna)")
    args = parser.parse_args()
    code = args.code.resolve()
    if args.action == "record":
        names = list(CASES) + (["default-dna"] if args.default_dna else [])
        if args.only:
            unknown = sorted(set(args.only) - {*CASES, "default-dna"})
            if unknown:
                raise SystemExit(f"--only {', '.join(unknown)}: no such case; cases: {', '.join(CASES)}, default-dna")
            names = args.only
        cases = run_all(names, code)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
        args.file.write_text(json.dumps({"commit": commit, "threads": 1, "cases": cases}, indent=1) + "\n")
        print(f"recorded {len(cases)} cases at {commit[:7]} -> {args.file}")
        return
    recorded = json.loads(args.file.read_text())["cases"]
    diffs = differences(recorded, run_all(list(recorded), code))
    for line in diffs:
        print(line)
    print(f"{len(recorded)} cases: " + (f"{len(diffs)} differences" if diffs else "all numbers and weights identical"))
    raise SystemExit(1 if diffs else 0)


if __name__ == "__main__":
    main()
