"""``make bench-wan``: the tcp, tcp + stunnel and udp carriers across an emulated WAN.

The SC and its client live in one network namespace, the SP and the service
in another; only the pipe crosses the userspace link emulator
(bench/wan/linkemu.py) between them. For each link profile and carrier, with
fresh daemons started through their CLI:

1. time to first byte of a new connection, the pipe already up;
2. 32 connections of small request/response (100-byte answers): p50, p99,
   p99.9 latency and requests/s;
3. the same while one bulk download shares the pipe;
4. one 20 MiB download alone: goodput (bounded in time; a partial transfer is
   marked);
5. a blackout of the link (every packet dropped both ways), then the time
   from its end to the first request answered end to end.

    python -m bench.wan.run [--quick] [--profiles a,b] [--carriers tcp,udp]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.cli import add_allow_dirty_option, add_results_option, refused, run_main
from bench.common import REPO, Skip, ensure_tools, machine, missing_reason, provenance
from bench.daemons import Tunnel, start_edgerq
from bench.paths import DEBIAN_TOOLS, Env, carrier_protocol, stunnel_sidecars
from bench.procs import Stack, interruptible, log
from bench.report import text_table, write_results, wrote_line
from bench.wan.linkemu import LinkEmulator, in_namespace, why_unavailable
from bench.wan.load import CONNECTIONS, SMALL, measure_cell
from bench.wan.settings import (
    CARRIER_TITLES,
    CARRIERS,
    FULL,
    PROFILE_TITLES,
    PROFILES,
    QUICK,
    QUICK_PROFILES,
)
from bench.wan.topology import BACKEND_PORT, wan_ends
from bench.wan.view import HEADER, chart, chart_title, markdown, table_rows

TOOLS = {b: DEBIAN_TOOLS[b] for b in ("stunnel4", "openssl")}


def start_pair(env: Env, carrier: str) -> Tunnel:
    """SC in the SC's namespace, SP in the SP's, joined over ``carrier`` (the pipe
    listener on every address of the SC's namespace unless stunnel fronts it); waits
    for the service port to answer and the SP to register."""
    return start_edgerq(
        env.stack,
        None,
        env.backend_port,
        max_connections=4 * CONNECTIONS,
        request_ttl=10,
        protocol=carrier_protocol(carrier),
        inaddr_any=carrier != "tcp-stunnel",
        sp_pipe_port=stunnel_sidecars(env, delay=False) if carrier == "tcp-stunnel" else None,
        ends=env.ends,
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    doc = __doc__ or ""
    p = argparse.ArgumentParser(prog="python -m bench.wan.run", description=doc.split("\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 2 profiles, short phases (~2-3 min)"
    )
    p.add_argument("--profiles", help=f"comma-separated, of {', '.join(PROFILES)}")
    p.add_argument("--carriers", help=f"comma-separated, of {', '.join(CARRIERS)}")
    p.add_argument(
        "--name", help="results name under bench/results/ (default wan; quick: wan-quick)"
    )
    add_results_option(p)
    p.add_argument(
        "--max-minutes",
        type=float,
        help="stop starting new cells after this long (default 25; quick 5)",
    )
    p.add_argument(
        "--tcp-cc",
        default="cubic",
        help="TCP congestion control in both namespaces (default cubic, the Linux default; "
        "'host' keeps what new namespaces inherit)",
    )
    p.add_argument(
        "--notsent-lowat",
        type=int,
        metavar="BYTES",
        help="set net.ipv4.tcp_notsent_lowat in both namespaces (what TCP_NOTSENT_LOWAT on "
        "the tcp pipe would do: less unsent data queued ahead of small answers)",
    )
    p.add_argument("--replot", type=Path, metavar="JSON", help="only redraw the chart of a run")
    add_allow_dirty_option(p)
    args = p.parse_args(argv)
    args.plan = QUICK if args.quick else FULL
    args.tcp_cc_used = "unknown"
    args.name = args.name or ("wan-quick" if args.quick else "wan")
    args.max_minutes = args.max_minutes or (5.0 if args.quick else 25.0)
    profiles = (
        args.profiles.split(",")
        if args.profiles
        else list(QUICK_PROFILES if args.quick else PROFILES)
    )
    carriers = args.carriers.split(",") if args.carriers else list(CARRIERS)
    if unknown := [x for x in profiles if x not in PROFILES] + [
        x for x in carriers if x not in CARRIERS
    ]:
        p.error(f"unknown profile or carrier: {', '.join(unknown)}")
    args.profile_list, args.carrier_list = profiles, carriers
    return args


def sysctls(args: argparse.Namespace) -> dict[str, str]:
    """net.ipv4 settings for both namespaces (the pipe's TCP, stunnel's and the client's)."""
    out = {}
    if args.tcp_cc != "host":
        out["tcp_congestion_control"] = args.tcp_cc
    if args.notsent_lowat:
        out["tcp_notsent_lowat"] = str(args.notsent_lowat)
    return out


ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


@contextlib.contextmanager
def congestion_control_allowed(name: str) -> Iterator[None]:
    """Let a namespace make ``name`` its default congestion control.

    Outside the first namespace the kernel accepts only the algorithms listed
    in the host's ``tcp_allowed_congestion_control`` (EPERM otherwise). The
    list only says what unprivileged sockets may pick, so adding one for the
    run is harmless; it is restored afterwards.
    """
    before = ALLOWED_CC.read_text().split()
    if name == "host" or name in before:
        yield
        return
    log(f"adding {name} to {ALLOWED_CC} for this run (restored at the end)")
    ALLOWED_CC.write_text(" ".join([*before, name]) + "\n")
    try:
        yield
    finally:
        ALLOWED_CC.write_text(" ".join(before) + "\n")


def run_cells(
    args: argparse.Namespace, tools: dict[str, str], deadline: float
) -> list[dict[str, Any]]:
    with congestion_control_allowed(args.tcp_cc):
        return _run_cells(args, tools, deadline)


def _run_cells(
    args: argparse.Namespace, tools: dict[str, str], deadline: float
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    first = PROFILES[args.profile_list[0]]
    with LinkEmulator(first, tag="bench") as link, Stack(prefix="edgerq-wan-") as outer:
        backend = outer.start(
            "backend",
            [
                *LinkEmulator.prefix(link.sp_ns),
                sys.executable,
                "-m",
                "bench.wan.backend",
                str(BACKEND_PORT),
            ],
            {"PYTHONPATH": str(REPO)},
        )
        backend.wait_log("listening on")
        for ns in (link.sc_ns, link.sp_ns):
            with in_namespace(ns):
                for key, value in sysctls(args).items():
                    Path("/proc/sys/net/ipv4", key).write_text(f"{value}\n")
                used = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
        args.tcp_cc_used = used
        log(f"TCP in the namespaces: {used}; set {sysctls(args) or 'nothing'}")
        log(f"link emulator: namespaces {link.sc_ns} / {link.sp_ns}, realtime {link.realtime}")
        for profile_name in args.profile_list:
            link.set_profile(PROFILES[profile_name])
            for carrier in args.carrier_list:
                head = {"profile": profile_name, "carrier": carrier}
                if time.monotonic() > deadline:
                    results.append(
                        {**head, "skipped": f"--max-minutes {args.max_minutes:g} reached"}
                    )
                    continue
                log(f"{PROFILE_TITLES[profile_name]}, {CARRIER_TITLES[carrier]}:")
                started = time.monotonic()
                with Stack(prefix="edgerq-wan-") as stack:
                    env = Env(stack, tools, BACKEND_PORT, wan_ends(link))
                    try:
                        sp = start_pair(env, carrier).sp
                        before = link.stats()
                        cell = measure_cell(link, args.plan, sp)
                        after = link.stats()
                        cell["link_counts"] = {
                            way: {k: after[way][k] - before[way].get(k, 0) for k in after[way]}
                            for way in ("sc_to_sp", "sp_to_sc")
                        }
                        results.append(
                            {**head, **cell, "seconds": round(time.monotonic() - started, 1)}
                        )
                    except Skip as exc:
                        log(f"    skipped: {exc}")
                        results.append({**head, "skipped": str(exc)})
                    except (TimeoutError, RuntimeError, OSError, EOFError) as exc:
                        text = str(exc) or type(exc).__name__
                        log(f"    failed: {text}")
                        results.append({**head, "error": text.splitlines()[0]})
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.replot is not None:
        data = json.loads(args.replot.read_text())
        png = args.replot.with_suffix(".png")
        problem = chart(data["results"], png, chart_title(data))
        print(problem or f"wrote {png}")
        return 1 if problem else 0
    reason = why_unavailable()
    if reason:
        log(f"cannot run the WAN bench: {reason}")
        return 2
    started = time.monotonic()
    prov = provenance()  # the code measured: the tree may change during the run
    commit, dirty = prov["commit"], prov["dirty"]
    if refused(prov, args.allow_dirty):
        return 2
    tools = ensure_tools(TOOLS)
    if "stunnel4" not in tools:
        log(f"tcp + stunnel will be skipped: {missing_reason('stunnel4', 'stunnel4')}")
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "dirty": dirty,
        "machine": machine(),
        "quick": args.quick,
        "plan": {
            "small_s": args.plan.small_s,
            "transfer_bytes": args.plan.transfer_bytes,
            "transfer_limit_s": args.plan.transfer_limit_s,
            "blackout_s": args.plan.blackout_s,
            "first_byte_samples": args.plan.first_byte_samples,
            "connections": CONNECTIONS,
            "answer_bytes": SMALL,
        },
        "profiles": {n: PROFILES[n].to_json() for n in args.profile_list},
        "tcp_notsent_lowat": args.notsent_lowat,
    }
    with interruptible():
        results = run_cells(args, tools, started + args.max_minutes * 60)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    meta["tcp_congestion_control"] = args.tcp_cc_used.strip()
    rows = table_rows(results)
    print()
    print(text_table(HEADER, rows, grouped=False))
    wrote = write_results(
        args.results / args.name,
        {**meta, "results": results},
        markdown(rows, meta),
        lambda png: chart(results, png, chart_title(meta)),
    )
    print(wrote_line(wrote))
    failed = [r for r in results if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    run_main(main, "interrupted; processes stopped, namespaces removed")
