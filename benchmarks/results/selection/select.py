"""The validation-only choice of stage-1 weights behind recraft's defaults.

    python benchmarks/results/selection/select.py benchmarks/results/selection/runs.csv

Reads the ``val`` column of a ``recraft bench`` runs.csv (the test column is not read) and
scores each configuration by the geometric mean over tasks of its validation error (mean over
seeds; floored at 0.005, since a small validation split can be classified perfectly). The
rule, fixed before the cells finished: the lowest score replaces the default only if it is at
least 2% below the default's.
"""

import csv
import math
import sys
from collections import defaultdict

HIGHER_IS_BETTER = {"accuracy", "f1", "auroc"}
DEFAULT, FLOOR, MARGIN = "recraft", 0.005, 0.02

errors: dict[tuple[str, str], list[float]] = defaultdict(list)
for row in csv.DictReader(open(sys.argv[1])):
    val = float(row["val"])
    errors[(row["task"], row["method"])].append(1 - val if row["metric"] in HIGHER_IS_BETTER else val)
tasks = sorted({t for t, _ in errors})
configs = sorted({m for _, m in errors} - {"nft"})
print("| task | " + " | ".join(configs) + " |")
print("|---" * (len(configs) + 1) + "|")
for t in tasks:
    cells = [errors.get((t, c), []) for c in configs]
    print(f"| {t} | " + " | ".join(f"{sum(e) / len(e):.4f} (n={len(e)})" for e in cells) + " |")
score = {
    c: math.exp(sum(math.log(max(sum(errors[(t, c)]) / len(errors[(t, c)]), FLOOR)) for t in tasks) / len(tasks))
    for c in configs
}
for c in configs:
    print(f"{c}: geometric-mean validation error {score[c]:.5f} ({score[c] / score[DEFAULT]:.3f}x the default)")
best = min(score, key=score.get)
chosen = best if score[best] <= (1 - MARGIN) * score[DEFAULT] else DEFAULT
print(f"chosen: {chosen}")
