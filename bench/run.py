"""``make bench``: edgerq beside direct, socat and ``ssh -R``, all to one nginx on loopback.

Every scenario runs ``wrk`` against each path in rounds interleaved with direct
(direct, path, direct, path, ...); a path's figure is the median of its rounds
and its ratio is that median over the median of the direct rounds paired with
it, so each ratio is measured in the same minute as its baseline.

    python -m bench.run [--duration 5] [--rounds 3] [--quick] [--paths a,b]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.cli import add_allow_dirty_option, add_results_option, refused, run_main
from bench.common import Skip, ensure_tools, machine, missing_reason, provenance
from bench.paths import (
    ALL_PATHS,
    BEFORE_PATHS,
    DEBIAN_TOOLS,
    PATH_SETUP,
    PATH_TITLES,
    QUICK_PATHS,
    Env,
)
from bench.procs import Stack, interruptible, log
from bench.report import (
    BarPanel,
    Bars,
    bar_chart,
    markdown_report,
    measured_on,
    provenance_line,
    text_table,
    write_results,
    wrote_line,
)
from bench.rounds import Cell, Sessions, cpu_role, direct_cell, measure, nagle_notes
from bench.wrk import SCENARIOS, Scenario, http_check, start_nginx

# --- output -------------------------------------------------------------------------------


def table_rows(cells: list[Cell], scenarios: list[Scenario]) -> list[list[str]]:
    rows = []
    for scenario in scenarios:
        mine = [c for c in cells if c.scenario == scenario]
        if not mine:
            continue
        for cell in [direct_cell(scenario, mine), *mine]:
            ratio = cell.ratio
            p99_added = (
                f"{cell.median('p99_ms') - cell.direct_median('p99_ms'):+.2f}"
                if cell.direct_rounds
                else ""
            )
            rows.append(
                [
                    scenario.title,
                    PATH_TITLES[cell.path] + (f" ({cell.errors} errors)" if cell.errors else ""),
                    f"{cell.median('requests_per_s'):.0f}",
                    f"{cell.median('mb_per_s'):.1f}",
                    f"{cell.median('p50_ms'):.2f}",
                    f"{cell.median('p99_ms'):.2f}",
                    p99_added,
                    "1.00" if cell.path == "direct" else f"{ratio:.2f}" if ratio else "-",
                    cell.cpu_text(),
                ]
            )
    return rows


HEADER = [
    "scenario",
    "path",
    "req/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "p99 added",
    "ratio",
    "CPU µs/req (/MB for 1 MiB)",
]


def markdown(
    rows: list[list[str]], meta: dict[str, Any], skipped: dict[str, str], notes: list[str]
) -> str:
    dirty = "**Dirty tree**: uncommitted changes were measured; no commit has this code."
    return markdown_report(
        [
            *([dirty] if meta.get("dirty") else []),
            f"{measured_on(meta)}Python {meta['machine']['python']}, edgerq {meta['revision']} "
            f"({meta.get('build', 'build not recorded')}); "
            f"wrk, median of {meta['rounds']} rounds of {meta['duration_s']:g} s interleaved "
            "with direct; ratio = path / direct (req/s, MB/s for 1 MiB); CPU = user + system "
            "time the relay processes themselves spent per request (per MB for 1 MiB), median "
            "of the rounds.",
        ],
        HEADER,
        rows,
        [
            *(f"{PATH_TITLES[name]}: skipped ({reason})" for name, reason in skipped.items()),
            *notes,
        ],
    )


def chart(cells: list[Cell], scenarios: list[Scenario], path: Path, title: str) -> str | None:
    """Above, each path's throughput over direct's; below, every path's p99 (log scale)."""
    names = list(dict.fromkeys(c.path for c in cells))
    shown = [s for s in scenarios if any(c.scenario == s for c in cells)]
    everything = ["direct", *names]

    def bars(name: str, value: Callable[[Cell], float]) -> Bars:
        values: list[float | None] = []
        for scenario in shown:
            row = [c for c in cells if c.scenario == scenario]
            cell = (
                direct_cell(scenario, row)
                if name == "direct"
                else next((c for c in row if c.path == name), None)
            )
            values.append(None if cell is None or not cell.rounds else value(cell))
        return Bars(PATH_TITLES[name], f"C{everything.index(name)}", values)

    return bar_chart(
        path,
        [s.title for s in shown],
        [
            BarPanel(
                [bars(name, lambda c: c.ratio or 0.0) for name in names],
                "throughput / direct (higher is better)",
                "%.2f",
                reference=1.0,
                title=title,
            ),
            BarPanel(
                [bars(name, lambda c: c.median("p99_ms")) for name in everything],
                "p99 latency, ms (log scale; lower is better)",
                "%.3g",
                log=True,
            ),
        ],
    )


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, help="seconds per wrk round (default 5; quick 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per path and scenario (3)")
    p.add_argument(
        "--paths",
        help=f"comma-separated paths besides direct (default all: {','.join(ALL_PATHS)}; "
        f"quick: {','.join(QUICK_PATHS)})",
    )
    p.add_argument(
        "--scenarios",
        help=f"comma-separated scenarios (default all: {','.join(s.key for s in SCENARIOS)})",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s rounds, fewer paths")
    p.add_argument(
        "--name", help="results file name under bench/results/ (default latest; quick: quick)"
    )
    p.add_argument(
        "--before",
        metavar="REV",
        help="also run edgerq tcp and udp from git revision REV, interleaved with this "
        "tree's (paths edgerq-tcp-before, edgerq-udp-before): a before/after in one "
        "sitting, for python -m bench.summary --before-after",
    )
    add_results_option(p)
    add_allow_dirty_option(p)
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.name is None:
        args.name = "quick" if args.quick else "latest"
    paths = args.paths.split(",") if args.paths else list(QUICK_PATHS if args.quick else ALL_PATHS)
    unknown = [x for x in paths if x not in PATH_SETUP]
    if unknown:
        p.error(f"unknown path(s) {unknown}; choose from {', '.join(PATH_SETUP)}")
    if args.before:
        paths += [BEFORE_PATHS[x] for x in list(paths) if x in BEFORE_PATHS]
    args.path_list = paths
    keys = args.scenarios.split(",") if args.scenarios else [s.key for s in SCENARIOS]
    by_key = {s.key: s for s in SCENARIOS}
    if any(k not in by_key for k in keys):
        p.error(f"unknown scenario in {keys}; choose from {', '.join(by_key)}")
    args.scenario_list = [by_key[k] for k in keys]
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    prov = provenance()  # the code measured: the tree may change during the run
    if refused(prov, args.allow_dirty):
        return 2
    revision = prov["revision"]
    before_commit = None
    if args.before:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", f"{args.before}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0:
            log(f"--before {args.before}: not a commit of this repository")
            return 2
        before_commit = found.stdout.strip()
    tools = ensure_tools(DEBIAN_TOOLS)
    for needed in ("nginx", "wrk"):
        if needed not in tools:
            log(f"cannot benchmark: {missing_reason(needed, DEBIAN_TOOLS[needed])}")
            return 2
    skipped: dict[str, str] = {}
    with interruptible(), Stack() as stack:
        env = Env(stack, tools, start_nginx(stack, tools["nginx"]), before=before_commit)
        http_check(env.backend_port)
        ports: dict[str, int] = {}
        sessions: dict[str, Sessions] = {}
        for name in args.path_list:
            started_before = len(stack.procs)
            try:
                port = PATH_SETUP[name](env)
                http_check(port)
                ports[name] = port
                sessions[name] = {}
                for proc in stack.procs[started_before:]:
                    sessions[name].setdefault(cpu_role(proc.name), []).append(proc.pid)
                log(f"path {name}: ready on :{port}")
            except Skip as exc:
                skipped[name] = str(exc)
                log(f"path {name}: skipped: {exc}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                skipped[name] = f"setup failed: {str(exc).splitlines()[0]}"
                log(f"path {name}: setup failed, skipped:\n{exc}")
        runs = len(args.scenario_list) * args.rounds * len(ports) * 2
        log(
            f"{runs} wrk runs of {args.duration:g} s "
            f"(about {runs * (args.duration + 0.3) / 60:.1f} min)"
        )
        cells = measure(
            tools["wrk"],
            ports,
            env.backend_port,
            args.scenario_list,
            args.rounds,
            args.duration,
            sessions,
        )
        notes = env.notes + nagle_notes(cells)

    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "revision": revision,
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "build": prov.get("build", "unknown"),
        **(
            {"before": {"commit": before_commit, "revision": before_commit[:7]}}
            if before_commit
            else {}
        ),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "elapsed_s": round(time.time() - started, 1),
        "tools": {
            "wrk": "wrk -t1 (1 conn) / -t2, --latency; Connection: close via -H",
            "backend": "nginx, 1 worker, access_log off, sendfile",
        },
    }
    rows = table_rows(cells, args.scenario_list)
    print()
    print(provenance_line(prov))
    print(text_table(HEADER, rows))
    for name, reason in skipped.items():
        print(f"skipped {PATH_TITLES[name]}: {reason}")
    for note in notes:
        print(f"note: {note}")
    results_dir: Path = args.results
    base = results_dir / args.name
    wrote = write_results(
        base,
        {
            **meta,
            "scenarios": {s.key: s.title for s in args.scenario_list},
            "skipped": skipped,
            "notes": notes,
            "results": [direct_cell(s, cells).as_dict() for s in args.scenario_list]
            + [c.as_dict() for c in cells],
        },
        markdown(rows, meta, skipped, notes),
        lambda png: chart(
            cells,
            args.scenario_list,
            png,
            f"edgerq vs relays, ratio to direct — {meta['date']}, "
            f"{meta['machine']['cores']} cores {meta['machine']['cpu_model']}",
        ),
    )
    print(wrote_line(wrote))
    return 0


if __name__ == "__main__":
    run_main(main, "interrupted; processes stopped and temp files removed")
