"""The README's ``make bench`` table, rendered from the results file the run wrote.

One row per scenario, one column per path: the ratio to direct and the CPU the
relay processes spent per request (per MB for the 1 MiB GET), SC + SP for
edgerq. With ``--against OTHER.json`` it prints instead, per scenario and
path, the CPU and ratio of both runs side by side (before → after), which is
how a change is judged: CPU per request is steady on a shared machine, req/s
is not. With ``--before-after`` it prints the same comparison from one run of
``bench.run --before REV``, whose ``*-before`` paths ran REV's edgerq
interleaved with this tree's: the drift of a shared machine then falls on
both alike, which two runs minutes apart cannot promise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS
from bench.report import markdown_table, provenance_line

PATHS = {
    "edgerq-tcp": "edgerq tcp",
    "edgerq-tcp-stunnel": "tcp + stunnel",
    "edgerq-udp": "edgerq udp",
    "socat": "socat",
    "ssh-R": "ssh -R",
}
SCENARIOS = {
    "small-ka-1": "small GET keep-alive, 1 connection",
    "small-ka-16": "small GET keep-alive, 16 connections",
    "small-ka-64": "small GET keep-alive, 64 connections",
    "small-close-16": "small GET, new connection each, 16",
    "large-4": "1 MiB GET, 4 connections (per MB)",
}

Entry = dict[str, Any]


def entries(data: dict[str, Any]) -> dict[tuple[str, str], Entry]:
    return {(e["scenario"], e["path"]): e for e in data["results"]}


def cpu_text(entry: Entry) -> str:
    """``14+15 µs`` for the SC and SP, ``23 µs`` for a single relay, ``14+15 µs
    (+11 stunnel)`` where stunnel's processes took their share too; ``-`` if unmeasured."""
    cpu = {k: v for k, v in (entry.get("cpu_us_per_unit") or {}).items() if k != "total"}
    if not cpu:
        return "-"
    ours = [cpu.pop(role) for role in ("SC", "SP") if role in cpu]
    if not ours:  # a relay of its own (socat, ssh)
        return "+".join(f"{v:.0f}" for v in cpu.values()) + " µs"
    text = "+".join(f"{v:.0f}" for v in ours) + " µs"
    others = " ".join(f"+{v:.0f} {role}" for role, v in cpu.items())
    return f"{text} ({others})" if others else text


def ratio_text(entry: Entry) -> str:
    ratio = entry.get("ratio")
    return "-" if ratio is None else f"{ratio:.2f}"


def present(data: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The scenarios and paths the run measured, in the usual order."""
    keys = entries(data)
    scenarios = [s for s in SCENARIOS if any(k[0] == s for k in keys)]
    paths = [p for p in PATHS if any(k[1] == p for k in keys)]
    return scenarios, paths


def origin(data: dict[str, Any]) -> str:
    return provenance_line(
        {
            "commit": data.get("commit", data["revision"]),  # older files: revision only
            "revision": data["revision"],
            "date": data["date"],
            "dirty": data.get("dirty", False),
            "build": data.get("build"),
        }
    )


def render(data: dict[str, Any]) -> str:
    keys = entries(data)
    scenarios, paths = present(data)
    rows = []
    for scenario in scenarios:
        row = [SCENARIOS[scenario]]
        for path in paths:
            e = keys.get((scenario, path))
            row.append(f"{ratio_text(e)} · {cpu_text(e)}" if e else "-")
        rows.append(row)
    header = ["scenario", *(PATHS[p] for p in paths)]
    lines = [
        f"{origin(data)}; ratio to direct · CPU per request (per MB for 1 MiB), SC+SP for edgerq",
        "",
        *markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


def total_cpu(entry: Entry | None) -> float | None:
    if not entry:
        return None
    cpu = entry.get("cpu_us_per_unit") or {}
    total = cpu.get("total")
    return float(total) if total is not None else None


def compare(before: dict[str, Any], after: dict[str, Any]) -> str:
    b_keys, a_keys = entries(before), entries(after)
    scenarios, paths = present(after)
    rows = []
    for scenario in scenarios:
        for path in paths:
            b, a = b_keys.get((scenario, path)), a_keys.get((scenario, path))
            if a is None:
                continue
            b_cpu, a_cpu = total_cpu(b), total_cpu(a)
            change = f"{(a_cpu / b_cpu - 1) * 100:+.0f} %" if a_cpu and b_cpu else "-"
            rows.append(
                [
                    SCENARIOS[scenario],
                    PATHS[path],
                    cpu_text(b) if b else "-",
                    cpu_text(a),
                    change,
                    ratio_text(b) if b else "-",
                    ratio_text(a),
                ]
            )
    header = ["scenario", "path", "CPU before", "CPU after", "CPU change", "ratio before", "after"]
    lines = [
        f"before: {origin(before)}",
        f"after: {origin(after)}",
        "",
        *markdown_table(header, rows),
    ]
    return "\n".join(lines) + "\n"


BEFORE_SUFFIX = "-before"


def split_before(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ``--before`` run as two runs: REV's edgerq paths (under their usual names)
    and this tree's, each with the other relays (direct, socat, ...) that ran beside."""
    meta = data.get("before")
    if not meta:
        raise ValueError("the run has no before paths (bench.run --before REV)")
    ours = [e for e in data["results"] if not e["path"].endswith(BEFORE_SUFFIX)]
    theirs = [
        {**e, "path": e["path"].removesuffix(BEFORE_SUFFIX)}
        for e in data["results"]
        if e["path"].endswith(BEFORE_SUFFIX)
    ]
    shared = [e for e in ours if not e["path"].startswith("edgerq")]  # direct, socat, ...
    before = {**data, "results": theirs + shared, **meta, "dirty": False, "build": None}
    after = {**data, "results": ours}
    return before, after


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.summary", description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="?", type=Path, default=RESULTS / "latest.json")
    p.add_argument(
        "--against",
        type=Path,
        metavar="BEFORE.json",
        help="compare with an earlier run's results file: CPU and ratio, before → after",
    )
    p.add_argument(
        "--before-after",
        action="store_true",
        help="compare a bench.run --before run's before paths with its own, from one file",
    )
    args = p.parse_args(argv)
    try:
        data = load(args.results)
        before = load(args.against) if args.against else None
        if args.before_after:
            before, data = split_before(data)
    except (OSError, ValueError) as exc:
        print(f"cannot read results: {exc}", file=sys.stderr)
        return 1
    print(compare(before, data) if before else render(data), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
