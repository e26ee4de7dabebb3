"""The ablation table from the finished cells of a ``recraft bench --variant ...`` output directory.

The benchmark writes its tables when every cell is done; this reads the cells that finished
(``DIR/cells/TASK-seedN/LABEL/metrics/evaluate.json``) and writes the same tables with the
same functions, so a run stopped part-way still gives its paired comparisons. Usage, from the
repository root:

    python benchmarks/results/ablation/assemble.py DIR OUT LABEL=METHOD [LABEL=METHOD ...]
"""

import json
import sys
from pathlib import Path

from flows.bench_report import write_report
from flows.benchmark import result_row, summarise


def main(out_dir: Path, dest: Path, variants: dict[str, str]) -> None:
    rows = []
    for path in sorted(out_dir.glob("cells/*/*/metrics/evaluate.json")):
        label = path.parents[1].name
        rows.append({**result_row(json.loads(path.read_text())), "method": label})
    summary = summarise(rows, variants)
    write_report(summary, rows, dest)
    print((dest / "table.md").read_text())


if __name__ == "__main__":
    pairs = dict(item.split("=", 1) for item in sys.argv[3:])
    main(Path(sys.argv[1]), Path(sys.argv[2]), pairs)
