"""CPU per small keep-alive request, SC and SP apart: the hot path's own measure.

Starts nginx (the backend), then for each interpreter given an SC and an SP
joined over tcp (or QUIC: ``--protocol udp``) as separate processes (as
``bench.run`` does), and drives ``wrk`` with N keep-alive connections through
each in turn, interleaved (A, B, A, B, ...) for ``--rounds`` rounds. It reads
each process's user + system CPU time from /proc around every round and prints
the median microseconds per request by role. ``--python`` may be given several
times (``label=/path/to/python``), so two trees are compared in one sitting,
e.g. the checkout before a change with its own venv against this one::

    python -m bench.hotpath --python before=/work/bench-before/.venv/bin/python \\
        --python now=.venv/bin/python --conns 16 --rounds 5

``--profile DIR`` runs the daemons under cProfile instead (slower; the
numbers then include the profiler) and writes ``DIR/<label>-sc.prof`` and
``-sp.prof`` when they stop (read them with ``python -m pstats``).
No result file is written: this is for working on the hot path, not a report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.common import ensure_tools
from bench.cpu import session_cpu_seconds
from bench.daemons import DAEMON_LOG_LEVEL, start_edgerq
from bench.procs import Stack, log
from bench.report import fixed_width
from bench.wrk import HTTP_TOOLS, LARGE_BODY, SCENARIOS, Scenario, run_wrk, start_nginx

_PROFILED = """
import cProfile, runpy, sys, time
sys.argv[0] = "edgerq"
profiler = cProfile.Profile(time.thread_time)  # CPU time, not wall time: idle waits are free
try:
    profiler.runcall(runpy.run_module, "edgerq", run_name="__main__")
except SystemExit:
    pass
finally:
    profiler.dump_stats({out!r})
"""
"""The daemon under cProfile, timed by the CPU time of its thread (system time included)."""


@dataclass
class Tree:
    """One interpreter (with its edgerq) under test, and the SC+SP it runs."""

    label: str
    python: str
    service_port: int = 0
    sc_pid: int = 0
    sp_pid: int = 0


def _daemon_argv(tree: Tree, role: str, config: Path, profile: Path | None) -> list[str]:
    tail = ["--log-level", DAEMON_LOG_LEVEL, role, str(config)]
    if profile is None:
        return [tree.python, "-m", "edgerq", *tail]
    out = profile / f"{tree.label}-{role}.prof"
    return [tree.python, "-c", _PROFILED.format(out=str(out)), *tail]


def start_tree(
    stack: Stack, tree: Tree, backend: int, profile: Path | None, protocol: str = "tcp"
) -> None:
    tunnel = start_edgerq(
        stack,
        tree.label,
        backend,
        max_connections=512,
        protocol=protocol,
        daemon_argv=lambda role, config: _daemon_argv(tree, role, config, profile),
    )
    tree.service_port, tree.sc_pid, tree.sp_pid = tunnel.service_port, tunnel.sc.pid, tunnel.sp.pid


def scenario_for(conns: int, large: bool = False) -> Scenario:
    path = "/large" if large else "/small"
    for scenario in SCENARIOS:
        if scenario.path == path and scenario.connections == conns and not scenario.close:
            return scenario
    return Scenario(f"{path[1:]}-ka-{conns}", f"{path} GET keep-alive, {conns} conns", path, conns)


def measure(
    trees: list[Tree], conns: list[int], rounds: int, duration: float, wrk: str, large: bool
) -> dict[tuple[str, int], list[tuple[float, float]]]:
    """(label, conns) -> per round (SC µs, SP µs) per request (per MB: ``large``)."""
    out: dict[tuple[str, int], list[tuple[float, float]]] = {}
    unit = "MB" if large else "req"
    for n in conns:
        scenario = scenario_for(n, large)
        for tree in trees:  # warm up: the first requests open connections and pipes' streams
            run_wrk(wrk, tree.service_port, scenario, 1.0)
        for r in range(rounds):
            for tree in trees:
                sc0, sp0 = session_cpu_seconds(tree.sc_pid), session_cpu_seconds(tree.sp_pid)
                result = run_wrk(wrk, tree.service_port, scenario, duration)
                sc1, sp1 = session_cpu_seconds(tree.sc_pid), session_cpu_seconds(tree.sp_pid)
                if result.requests <= 0 or result.errors:
                    raise RuntimeError(f"{tree.label}: {result.requests} requests, errors")
                units = result.requests * (LARGE_BODY / 1e6 if large else 1)
                per = ((sc1 - sc0) * 1e6 / units, (sp1 - sp0) * 1e6 / units)
                out.setdefault((tree.label, n), []).append(per)
                log(
                    f"round {r + 1} {tree.label:>10} {n:3d} conns: SC {per[0]:6.1f} "
                    f"SP {per[1]:6.1f} µs/{unit} ({result.requests:.0f} requests)"
                )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.hotpath",
        description="SC and SP CPU microseconds per small keep-alive request, "
        "several interpreters interleaved in one sitting.",
    )
    p.add_argument(
        "--python",
        action="append",
        metavar="LABEL=PATH",
        help="an interpreter whose edgerq to run (repeatable; default: this one, as 'now')",
    )
    p.add_argument(
        "--conns",
        type=int,
        action="append",
        help="keep-alive client connections (repeatable; default 16)",
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds per tree (default 3)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    p.add_argument(
        "--large", action="store_true", help="1 MiB GETs instead: CPU µs per MB, not per request"
    )
    p.add_argument("--protocol", choices=("tcp", "udp"), default="tcp", help="the carrier")
    p.add_argument(
        "--profile", type=Path, metavar="DIR", help="run the daemons under cProfile into DIR"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    trees: list[Tree] = []
    for spec in args.python or [f"now={sys.executable}"]:
        label, sep, python = spec.partition("=")
        if not sep or not label or not python:
            raise SystemExit(f"--python wants LABEL=PATH, not {spec!r}")
        trees.append(Tree(label, python))
    conns = args.conns or [16]
    tools = ensure_tools(HTTP_TOOLS)
    if "nginx" not in tools or "wrk" not in tools:
        raise SystemExit("nginx and wrk are needed (apt-get install -y nginx wrk)")
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    with Stack("edgerq-hotpath-") as stack:
        backend = start_nginx(stack, tools["nginx"])
        for tree in trees:
            start_tree(stack, tree, backend, args.profile, args.protocol)
        results = measure(trees, conns, args.rounds, args.duration, tools["wrk"], args.large)
    unit = "MB (1 MiB GETs)" if args.large else "request"
    print(f"median CPU µs per {unit} over {args.rounds} rounds of {args.duration:g} s")
    rows = []
    for (label, n), per in results.items():
        sc = statistics.median(p[0] for p in per)
        sp = statistics.median(p[1] for p in per)
        total = statistics.median(p[0] + p[1] for p in per)
        rows.append([label, str(n), f"{sc:.1f}", f"{sp:.1f}", f"{total:.1f}"])
    print(fixed_width(["tree", "conns", "SC", "SP", "SC+SP"], rows, [12, 5, 7, 7, 7]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
