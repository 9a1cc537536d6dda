"""The README's lossy-link table, rendered from the results file the run wrote.

``make bench-loss`` runs tests/integration/test_loss.py with
``EDGERQ_LOSS_RESULTS=bench/results/loss.json`` (every byte checked by SHA-256,
goodput written there with the date and commit of the run), then this prints
the Markdown table and the line naming the code measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.report import markdown_table, provenance_line

COLUMNS = [("udp", "up"), ("udp", "down"), ("tcp", "up"), ("tcp", "down")]


def render(data: dict[str, Any]) -> str:
    entries = list(data["results"].values())
    runs = {json.dumps(e["run"], sort_keys=True) for e in entries}
    losses = sorted({e["loss"] for e in entries})
    by = {(e["carrier"], e["loss"]): e for e in entries}
    rows = []
    for loss in losses:
        row = [f"{loss:.0%}".replace("%", " %")]
        for carrier, direction in COLUMNS:
            entry = by.get((carrier, loss))
            row.append(f"{entry[f'{direction}_mib_s']:.1f} MiB/s" if entry else "-")
        rows.append(row)
    header = ["loss", *(f"{c} {d}" for c, d in COLUMNS)]
    table = markdown_table(header, rows, left=1)
    origin = [provenance_line(json.loads(r)) for r in sorted(runs)]
    if len(runs) > 1:
        origin.insert(0, "Entries from more than one run:")
    return "\n".join([*origin, "", *table]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loss", description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", type=Path, default=RESULTS / "loss.json")
    args = p.parse_args(argv)
    try:
        data = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.results}: {exc}", file=sys.stderr)
        return 1
    print(render(data), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
