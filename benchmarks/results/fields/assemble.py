"""How the field tables in the README were made: 30 runs of the committed defaults,

    recraft run --task T --seed S --method M --workdir W --metrics-out M/T-S.json

for T in advection, diffusion_reaction, burgers, darcy and tecator, M in recraft and nft, S in
0, 1, 2, one at a time on a 2-core CPU (tecator later than the fields, with its per_task
entry). The per-run metrics files are in ``recraft/`` and ``nft/``; this script, run from the
repository root, rebuilds ``table.md`` and ``paired.json`` with the benchmark's own statistics
(``flows.benchmark``: ``summarise``, ``markdown``) for the four field tasks.
"""

import json
from pathlib import Path

from flows.bench_report import markdown
from flows.benchmark import result_row, summarise

HERE = Path(__file__).parent


def main() -> None:
    rows = [
        result_row(json.loads(path.read_text()))
        for method in ("recraft", "nft")
        for path in sorted((HERE / method).glob("*-[0-9].json"))
        if not path.name.startswith("tecator")  # the field comparison; tecator's runs are a later commit's
    ]
    summary = summarise(rows)
    (HERE / "table.md").write_text(markdown(summary))
    (HERE / "paired.json").write_text(json.dumps({"rows": rows, "summary": summary}, indent=1, default=str) + "\n")
    print(markdown(summary))


if __name__ == "__main__":
    main()
