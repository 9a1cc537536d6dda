"""CPU per request of the SC and the SP, two (or more) source trees compared in one sitting.

Each tree's ``src`` runs as the SC and SP (``PYTHONPATH``) behind one shared
nginx; rounds are interleaved (A, B, A, B, ...) and each figure is the median
of its rounds, so drift in the machine's load falls on every tree alike. A
round starts a fresh SC and SP, warms them with a 1 s ``wrk`` run, then reads
their CPU time (``/proc``) around a ``DURATION`` s run::

    git archive e0ffbaa src | tar -x -C /tmp/base
    python -m bench.ab --rounds 6 base=/tmp/base/src new=src

On this 2-core machine a tree's rounds spread by about +-8 %; a difference
smaller than that needs more rounds, or a count instead. Two counts come with
every round and depend less on the machine's speed: the daemons' wake-ups
(voluntary context switches, ``/proc/PID/status``) per request and, with
``--strace``, their system calls per request by name (``strace -c``, which
slows them several times over and stops them at every call: its rounds' CPU
and wake-up figures are not comparable with a plain round's).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
from collections import Counter
from pathlib import Path

from bench.common import ensure_tools
from bench.cpu import session_cpu_seconds
from bench.daemons import start_edgerq
from bench.procs import Stack
from bench.wrk import HTTP_TOOLS, SCENARIOS, run_wrk, start_nginx


def wakeups(pid: int) -> int:
    """Voluntary context switches of ``pid`` so far: how often it slept and was woken."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no voluntary_ctxt_switches")


def parse_strace_summary(text: str) -> Counter[str]:
    """System call name -> calls, from ``strace -c``'s table (errors included)."""
    calls: Counter[str] = Counter()
    for line in text.splitlines():
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(fields) >= 5 and fields[-1] != "total" and fields[3].isdigit():
            calls[fields[-1]] += int(fields[3])
    return calls


def start_strace(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """``strace -c`` attached to ``pid``; stop it with ``stop_strace`` to get the table."""
    return subprocess.Popen(["strace", "-c", "-q", "-o", str(out), "-p", str(pid)])


def stop_strace(tracer: subprocess.Popen[bytes], out: Path) -> Counter[str]:
    tracer.terminate()
    tracer.wait(timeout=30)
    return parse_strace_summary(out.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("trees", nargs="+", metavar="NAME=SRC", help="a name and a src dir")
    parser.add_argument("--scenario", default="small-close-16", choices=[s.key for s in SCENARIOS])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--protocol", choices=("tcp", "udp"), default="tcp", help="the carrier")
    parser.add_argument(
        "--strace",
        action="store_true",
        help="count each daemon's system calls per request (strace -c; slows the daemons)",
    )
    args = parser.parse_args(argv)
    trees: list[tuple[str, str]] = []
    for tree in args.trees:
        name, sep, src = tree.partition("=")
        if not sep or not os.path.isdir(os.path.join(src, "edgerq")):
            parser.error(f"{tree!r}: want NAME=SRC, SRC a directory holding edgerq/")
        trees.append((name, os.path.abspath(src)))
    scenario = next(s for s in SCENARIOS if s.key == args.scenario)
    tools = ensure_tools(HTTP_TOOLS)
    if args.strace:
        ensure_tools({"strace": "strace"})
    cpu: dict[str, dict[str, list[float]]] = {n: {"SC": [], "SP": []} for n, _ in trees}
    woken: dict[str, dict[str, list[float]]] = {n: {"SC": [], "SP": []} for n, _ in trees}
    calls: dict[str, dict[str, Counter[str]]] = {
        n: {"SC": Counter(), "SP": Counter()} for n, _ in trees
    }
    requests: Counter[str] = Counter()
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
                tracers = (
                    {
                        k: start_strace(p, stack.path(f"strace-{name}{r}-{k}"))
                        for k, p in procs.items()
                    }
                    if args.strace
                    else {}
                )
                before = {k: session_cpu_seconds(p) for k, p in procs.items()}
                slept = {k: wakeups(p) for k, p in procs.items()}
                result = run_wrk(tools["wrk"], t.service_port, scenario, args.duration)
                after = {k: session_cpu_seconds(p) for k, p in procs.items()}
                n = max(1, result.requests)
                for k, p in procs.items():
                    cpu[name][k].append((after[k] - before[k]) * 1e6 / n)
                    woken[name][k].append((wakeups(p) - slept[k]) / n)
                for k, tracer in tracers.items():
                    calls[name][k].update(stop_strace(tracer, stack.path(f"strace-{name}{r}-{k}")))
                requests[name] += result.requests
                print(
                    f"round {r + 1} {name}: SC {cpu[name]['SC'][-1]:.0f} SP "
                    f"{cpu[name]['SP'][-1]:.0f} us/request, {result.requests_per_s:.0f} req/s, "
                    f"{result.errors} errors; wake-ups per request SC "
                    f"{woken[name]['SC'][-1]:.2f} SP {woken[name]['SP'][-1]:.2f}",
                    flush=True,
                )
                stack.stop(t.sp)
                stack.stop(t.sc)
    for name, _ in trees:
        sc, sp = (statistics.median(cpu[name][k]) for k in ("SC", "SP"))
        wsc, wsp = (statistics.median(woken[name][k]) for k in ("SC", "SP"))
        print(
            f"{name}: SC {sc:.0f} + SP {sp:.0f} = {sc + sp:.0f} us/request (median); "
            f"wake-ups per request SC {wsc:.2f} SP {wsp:.2f}"
        )
    if args.strace:
        print("system calls per request (all rounds):")
        for role in ("SC", "SP"):
            names = sorted({c for n, _ in trees for c in calls[n][role]})
            names = [c for c in names if any(calls[n][role][c] for n, _ in trees)]
            print(f"  {role:<3} {'':<16}" + "".join(f"{n:>10}" for n, _ in trees))
            for call in names:
                row = [calls[n][role][call] / max(1, requests[n]) for n, _ in trees]
                if max(row) >= 0.01:
                    print(f"      {call:<16}" + "".join(f"{v:>10.2f}" for v in row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
