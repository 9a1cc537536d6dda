"""CPU per request of the SC and the SP, two (or more) source trees compared in one sitting.

Each tree's ``src`` runs as the SC and SP (``PYTHONPATH``) behind one shared
nginx; rounds are interleaved (A, B, A, B, ...) and each figure is the median
of its rounds, so drift in the machine's load falls on every tree alike. A
round starts a fresh SC and SP, warms them with a 1 s ``wrk`` run, then reads
their CPU time (``/proc``) around a ``DURATION`` s run::

    git archive e0ffbaa src | tar -x -C /tmp/base
    python -m bench.ab --rounds 6 base=/tmp/base/src new=src

On this 2-core machine a tree's rounds spread by about +-8 %; a difference
smaller than that needs more rounds, or a count (``strace -c``) instead.
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench.common import Stack, ensure_tools, start_edgerq
from bench.cpu import session_cpu_seconds
from bench.run import DEBIAN_TOOLS, SCENARIOS, run_wrk, start_nginx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("trees", nargs="+", metavar="NAME=SRC", help="a name and a src dir")
    parser.add_argument("--scenario", default="small-close-16", choices=[s.key for s in SCENARIOS])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--protocol", choices=("tcp", "udp"), default="tcp", help="the carrier")
    args = parser.parse_args(argv)
    trees: list[tuple[str, str]] = []
    for tree in args.trees:
        name, sep, src = tree.partition("=")
        if not sep or not os.path.isdir(os.path.join(src, "edgerq")):
            parser.error(f"{tree!r}: want NAME=SRC, SRC a directory holding edgerq/")
        trees.append((name, os.path.abspath(src)))
    scenario = next(s for s in SCENARIOS if s.key == args.scenario)
    tools = ensure_tools({b: DEBIAN_TOOLS[b] for b in ("nginx", "wrk")})
    cpu: dict[str, dict[str, list[float]]] = {n: {"SC": [], "SP": []} for n, _ in trees}
    with Stack() as stack:
        nginx = start_nginx(stack, tools["nginx"])
        for r in range(args.rounds):
            for name, src in trees:
                os.environ["PYTHONPATH"] = src
                t = start_edgerq(
                    stack, f"{name}{r}", nginx, max_connections=128, protocol=args.protocol
                )
                run_wrk(tools["wrk"], t.service_port, scenario, 1)  # warm up
                procs = {"SC": t.sc.pid, "SP": t.sp.pid}
                before = {k: session_cpu_seconds(p) for k, p in procs.items()}
                result = run_wrk(tools["wrk"], t.service_port, scenario, args.duration)
                after = {k: session_cpu_seconds(p) for k, p in procs.items()}
                for k in procs:
                    cpu[name][k].append((after[k] - before[k]) * 1e6 / max(1, result.requests))
                print(
                    f"round {r + 1} {name}: SC {cpu[name]['SC'][-1]:.0f} SP "
                    f"{cpu[name]['SP'][-1]:.0f} us/request, {result.requests_per_s:.0f} req/s, "
                    f"{result.errors} errors",
                    flush=True,
                )
                stack.stop(t.sp)
                stack.stop(t.sc)
    for name, _ in trees:
        sc, sp = (statistics.median(cpu[name][k]) for k in ("SC", "SP"))
        print(f"{name}: SC {sc:.0f} + SP {sp:.0f} = {sc + sp:.0f} us/request (median)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
