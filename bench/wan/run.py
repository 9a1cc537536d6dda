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
import asyncio
import contextlib
import datetime as dt
import json
import math
import secrets
import socket
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    DIRTY_REFUSAL,
    LOCALHOST,
    RESULTS,
    Proc,
    Skip,
    Stack,
    edgerq_argv,
    edgerq_check,
    ensure_tools,
    interruptible,
    log,
    machine,
    markdown_table,
    missing_reason,
    provenance,
    provider_config,
    sc_fingerprint,
    write_atomic,
    write_json,
)
from bench.common import (
    consumer_config as sample_consumer_config,
)
from bench.run import Env, _make_cert, _stunnel_conf
from bench.wan.linkemu import SC_ADDR, LinkEmulator, LinkProfile, in_namespace, why_unavailable

# Fixed ports: the namespaces are this run's own, so nothing else listens there.
PIPE_PORT = 12345
SERVICE_PORT = 3000
BACKEND_PORT = 8000
STUNNEL_SERVER_PORT = 4443
STUNNEL_CLIENT_PORT = 4444
SMALL = 100
CONNECTIONS = 32
LINK_RATE_MBIT = 50.0
"""Every profile's bottleneck, each way: a WAN has one, and 50 Mbit/s stays
well under what the emulator and both carriers can move on this machine, so the
figures measure the path, not a CPU."""

PROFILES = {
    "rtt40": LinkProfile.symmetric("rtt40", 40.0, rate_mbit=LINK_RATE_MBIT),
    "rtt40-loss1": LinkProfile.symmetric("rtt40-loss1", 40.0, 0.01, rate_mbit=LINK_RATE_MBIT),
    "rtt80-loss3": LinkProfile.symmetric("rtt80-loss3", 80.0, 0.03, rate_mbit=LINK_RATE_MBIT),
    "rtt150-loss1-jitter": LinkProfile.symmetric(
        "rtt150-loss1-jitter", 150.0, 0.01, jitter_ms=5.0, rate_mbit=LINK_RATE_MBIT
    ),
}
PROFILE_TITLES = {
    "rtt40": "RTT 40 ms, no loss",
    "rtt40-loss1": "RTT 40 ms, 1 % loss",
    "rtt80-loss3": "RTT 80 ms, 3 % loss",
    "rtt150-loss1-jitter": "RTT 150 ms ± 5 ms jitter, 1 % loss",
}
CARRIERS = ("tcp", "tcp-stunnel", "udp")
CARRIER_TITLES = {"tcp": "tcp", "tcp-stunnel": "tcp + stunnel", "udp": "udp (QUIC)"}
QUICK_PROFILES = ("rtt40-loss1", "rtt80-loss3")
TOOLS = {"stunnel4": "stunnel4", "openssl": "openssl"}


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    small_s: float
    transfer_bytes: int
    transfer_limit_s: float
    blackout_s: float
    first_byte_samples: int
    recovery_limit_s: float = 30.0


FULL = Plan(
    small_s=12.0,
    transfer_bytes=20 << 20,
    transfer_limit_s=25.0,
    blackout_s=5.0,
    first_byte_samples=10,
)
QUICK = Plan(
    small_s=2.5,
    transfer_bytes=20 << 20,
    transfer_limit_s=4.0,
    blackout_s=3.0,
    first_byte_samples=3,
    recovery_limit_s=20.0,
)


# --- the topology -------------------------------------------------------------------------


def _set(parent: ET.Element, tag: str, value: object) -> None:
    elem = parent.find(tag)
    if elem is None:
        elem = ET.SubElement(parent, tag)
    elem.text = str(value)


def consumer_xml(carrier: str) -> str:
    """The shipped sample with this bench's ports; the pipe listener on every
    address of the SC's namespace unless stunnel fronts it."""
    text = sample_consumer_config(
        PIPE_PORT,
        SERVICE_PORT,
        max_connections=4 * CONNECTIONS,
        request_ttl=10,
        protocol="udp" if carrier == "udp" else None,
    )
    root = ET.fromstring(text)
    listener = root.find("listener")
    assert listener is not None
    _set(listener, "inaddr_any", "no" if carrier == "tcp-stunnel" else "yes")
    return ET.tostring(root, encoding="unicode")


@dataclass
class Topology:
    link: LinkEmulator
    stack: Stack
    tools: dict[str, str]

    def start(
        self, name: str, namespace: str, argv: list[str], env: dict[str, str] | None = None
    ) -> Proc:
        return self.stack.start(name, [*LinkEmulator.prefix(namespace), *argv], env)

    def stunnel_pair(self) -> int:
        """stunnel server beside the SC, client beside the SP; returns the port the SP dials."""
        stunnel = self.tools.get("stunnel4")
        if stunnel is None or "openssl" not in self.tools:
            missing = "stunnel4" if stunnel is None else "openssl"
            raise Skip(missing_reason(missing, TOOLS[missing]))
        name = "stunnel-sc"
        key, cert = _make_cert(Env(self.stack, self.tools, 0), name)
        server_conf = self.stack.path("stunnel-server.conf")
        server_conf.write_text(
            _stunnel_conf(
                f"accept = {SC_ADDR}:{STUNNEL_SERVER_PORT}\nconnect = {LOCALHOST}:{PIPE_PORT}\n"
                f"cert = {cert}\nkey = {key}\n"
            )
        )
        client_conf = self.stack.path("stunnel-client.conf")
        client_conf.write_text(
            _stunnel_conf(
                f"client = yes\naccept = {LOCALHOST}:{STUNNEL_CLIENT_PORT}\n"
                f"connect = {SC_ADDR}:{STUNNEL_SERVER_PORT}\n"
                f"verify = 2\nCAfile = {cert}\ncheckHost = {name}\n"
            )
        )
        server = self.start("stunnel-server", self.link.sc_ns, [stunnel, str(server_conf)])
        wait_port_in(self.link.sc_ns, SC_ADDR, STUNNEL_SERVER_PORT, server)
        client = self.start("stunnel-client", self.link.sp_ns, [stunnel, str(client_conf)])
        wait_port_in(self.link.sp_ns, LOCALHOST, STUNNEL_CLIENT_PORT, client)
        return STUNNEL_CLIENT_PORT

    def edgerq(self, carrier: str) -> tuple[Proc, Proc]:
        """SC in the SC's namespace, SP in the SP's, joined over ``carrier``; waits for
        the SP to register and the service port to answer."""
        sc_conf = self.stack.path("consumer.xml")
        sc_conf.write_text(consumer_xml(carrier))
        ok, why = edgerq_check(sc_conf)
        if not ok:
            if carrier == "udp":
                raise Skip(f"udp carrier not available ({why})")
            raise RuntimeError(f"edgerq check {sc_conf}: {why}")
        pipe: dict[str, str] = {"hostname": SC_ADDR}
        protocol = None
        if carrier == "udp":
            protocol = "udp"
            pipe["server_fingerprint"] = sc_fingerprint(sc_conf)
        env = {"EDGERQ_AUTH_TOKEN": secrets.token_hex(16)}
        sc = self.start("sc", self.link.sc_ns, edgerq_argv("sc", sc_conf), env)
        sc.wait_log("accepting pipes")
        port = PIPE_PORT
        if carrier == "tcp-stunnel":
            port = self.stunnel_pair()
            pipe["hostname"] = LOCALHOST
        sp_conf = self.stack.path("provider.xml")
        sp_conf.write_text(
            provider_config(port, BACKEND_PORT, protocol=protocol, pipe_settings=pipe)
        )
        sp = self.start("sp", self.link.sp_ns, edgerq_argv("sp", sp_conf), env)
        sp.wait_log("registered", timeout=60.0)
        wait_port_in(self.link.sc_ns, LOCALHOST, SERVICE_PORT, sc)
        return sc, sp


def port_open_in(namespace: str, host: str, port: int) -> bool:
    with in_namespace(namespace):
        sock = socket.socket()
    with sock:
        sock.settimeout(0.5)
        try:
            sock.connect((host, port))
            return True
        except OSError:
            return False


def wait_port_in(namespace: str, host: str, port: int, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open_in(namespace, host, port):
        proc.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.name}: {host}:{port} not open after {timeout:g} s")
        time.sleep(0.05)


# --- the load --------------------------------------------------------------------------


async def open_client(namespace: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from the SC's namespace to the SC's service port."""
    with in_namespace(namespace):
        sock = socket.socket()
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (LOCALHOST, SERVICE_PORT))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock, limit=1 << 20)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 2)


async def first_byte(namespace: str, samples: int) -> list[float]:
    """Milliseconds from connect() to the first byte of a 100-byte answer, one at a time."""
    out = []
    for _ in range(samples):
        started = time.perf_counter()
        reader, writer = await asyncio.wait_for(open_client(namespace), 15)
        writer.write(f"{SMALL}\n".encode())
        await asyncio.wait_for(reader.readexactly(1), 15)
        out.append((time.perf_counter() - started) * 1e3)
        await asyncio.wait_for(reader.readexactly(SMALL - 1), 15)
        await close(writer)
    return out


@dataclass
class SmallResult:
    latencies_ms: list[float]
    seconds: float
    errors: int
    bulk_bytes: int = 0


async def small_requests(namespace: str, seconds: float, with_bulk: bool) -> SmallResult:
    """``CONNECTIONS`` connections each sending a request as soon as the last answer
    arrived, for ``seconds`` (after one warm-up request each)."""
    latencies: list[float] = []
    errors = 0
    bulk_bytes = 0
    start_at = 0.0
    stop_at = math.inf

    async def connection() -> None:
        nonlocal errors
        reader, writer = await open_client(namespace)
        try:
            request = f"{SMALL}\n".encode()
            writer.write(request)
            await reader.readexactly(SMALL)  # warm-up, not counted
            while (now := time.perf_counter()) < stop_at:
                writer.write(request)
                try:
                    await asyncio.wait_for(reader.readexactly(SMALL), 30)
                except (TimeoutError, OSError, asyncio.IncompleteReadError):
                    errors += 1
                    await close(writer)
                    reader, writer = await open_client(namespace)
                    continue
                if now >= start_at:
                    latencies.append((time.perf_counter() - now) * 1e3)
        finally:
            await close(writer)

    async def bulk() -> None:
        nonlocal bulk_bytes
        reader, writer = await open_client(namespace)
        try:
            writer.write(b"-1\n")
            while time.perf_counter() < stop_at:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                if time.perf_counter() >= start_at:
                    bulk_bytes += len(chunk)
        finally:
            await close(writer)

    warmup = 1.5 if with_bulk else 0.5  # let the bulk download reach its pace first
    start_at = time.perf_counter() + warmup
    stop_at = start_at + seconds
    tasks = [asyncio.create_task(connection()) for _ in range(CONNECTIONS)]
    if with_bulk:
        tasks.append(asyncio.create_task(bulk()))
    done = await asyncio.gather(*tasks, return_exceptions=True)
    errors += sum(1 for d in done if isinstance(d, BaseException))
    return SmallResult(latencies, seconds, errors, bulk_bytes)


async def transfer(namespace: str, size: int, limit: float) -> tuple[int, float]:
    """Download ``size`` bytes on a new connection, for at most ``limit`` seconds.

    Returns (bytes received, seconds)."""
    reader, writer = await asyncio.wait_for(open_client(namespace), 15)
    got = 0
    started = time.perf_counter()
    try:
        writer.write(f"{size}\n".encode())
        deadline = started + limit
        while got < size:
            left = deadline - time.perf_counter()
            if left <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(1 << 20), left)
            except TimeoutError:
                break
            if not chunk:
                break
            got += len(chunk)
    finally:
        elapsed = time.perf_counter() - started
        await close(writer)
    return got, elapsed


async def recovery(namespace: str, since: float, limit: float) -> float | None:
    """Seconds from ``since`` (monotonic) until a new connection gets an answer,
    trying a fresh one every 100 ms; None after ``limit``."""
    loop = asyncio.get_running_loop()
    answered: asyncio.Future[float] = loop.create_future()

    async def probe() -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.TimeoutError):
            reader, writer = await asyncio.wait_for(open_client(namespace), limit)
            try:
                writer.write(f"{SMALL}\n".encode())
                await asyncio.wait_for(reader.readexactly(SMALL), limit)
                if not answered.done():
                    answered.set_result(time.monotonic() - since)
            finally:
                await close(writer)

    probes: list[asyncio.Task[None]] = []
    try:
        while time.monotonic() - since < limit and not answered.done():
            probes.append(asyncio.create_task(probe()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered), 0.1)
        return answered.result() if answered.done() else None
    finally:
        for task in probes:
            task.cancel()
        await asyncio.gather(*probes, return_exceptions=True)


# --- one cell ----------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return math.nan
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


CDF_POINTS = sorted(
    {round(i / 100, 4) for i in range(1, 100)}
    | {0.001, 0.005, 0.991, 0.992, 0.993, 0.994, 0.995, 0.996, 0.997, 0.998, 0.999, 0.9995, 1.0}
)


def latency_summary(result: SmallResult) -> dict[str, Any]:
    values = sorted(result.latencies_ms)
    return {
        "requests": len(values),
        "req_s": round(len(values) / result.seconds, 1),
        "p50_ms": round(percentile(values, 0.50), 2),
        "p99_ms": round(percentile(values, 0.99), 2),
        "p999_ms": round(percentile(values, 0.999), 2),
        "max_ms": round(values[-1], 2) if values else None,
        "errors": result.errors,
        "cdf": [[q, round(percentile(values, q), 3)] for q in CDF_POINTS] if values else [],
    }


def measure_cell(top: Topology, carrier: str, plan: Plan, sp: Proc) -> dict[str, Any]:
    ns = top.link.sc_ns
    cell: dict[str, Any] = {}
    ttfb = asyncio.run(first_byte(ns, plan.first_byte_samples))
    cell["first_byte_ms"] = {
        "median": round(sorted(ttfb)[len(ttfb) // 2], 1),
        "max": round(max(ttfb), 1),
        "samples": [round(x, 1) for x in ttfb],
    }
    log(f"    first byte: median {cell['first_byte_ms']['median']} ms")
    for key, with_bulk in (("small", False), ("small_with_bulk", True)):
        result = asyncio.run(small_requests(ns, plan.small_s, with_bulk))
        summary = latency_summary(result)
        if with_bulk:
            summary["bulk_mbit_s"] = round(result.bulk_bytes * 8 / result.seconds / 1e6, 2)
        cell[key] = summary
        extra = f", bulk {summary['bulk_mbit_s']} Mbit/s" if with_bulk else ""
        log(
            f"    {key}: {summary['req_s']} req/s, p50 {summary['p50_ms']} p99 {summary['p99_ms']} "
            f"p99.9 {summary['p999_ms']} ms, {summary['errors']} errors{extra}"
        )
    time.sleep(1.0)  # let the bulk download's tail leave the pipe
    got, seconds = asyncio.run(transfer(ns, plan.transfer_bytes, plan.transfer_limit_s))
    cell["transfer"] = {
        "bytes": got,
        "target_bytes": plan.transfer_bytes,
        "seconds": round(seconds, 2),
        "complete": got >= plan.transfer_bytes,
        "mbit_s": round(got * 8 / seconds / 1e6, 2) if seconds > 0 else None,
    }
    log(
        f"    transfer: {got / 2**20:.1f} MiB in {seconds:.1f} s = "
        f"{cell['transfer']['mbit_s']} Mbit/s"
        + ("" if cell["transfer"]["complete"] else " (stopped at the time limit)")
    )
    registered = sp.log_text().count("registered")
    _, until = top.link.blackout(plan.blackout_s)
    time.sleep(max(0.0, until - time.monotonic()))
    took = asyncio.run(recovery(ns, until, plan.recovery_limit_s))
    cell["recovery"] = {
        "blackout_s": plan.blackout_s,
        "seconds": None if took is None else round(took, 2),
        "pipe_redialed": sp.log_text().count("registered") > registered,
    }
    log(f"    recovery after {plan.blackout_s:g} s blackout: {took} s")
    return cell


# --- output --------------------------------------------------------------------------------


def _fmt(value: object, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float | int):
        return f"{value:,.{digits}f}"
    return str(value)


HEADER = [
    "profile",
    "carrier",
    "req/s",
    "p50 ms",
    "p99 ms",
    "p99.9 ms",
    "+bulk req/s",
    "+bulk p50",
    "+bulk p99",
    "+bulk p99.9",
    "bulk Mbit/s",
    "20 MiB Mbit/s",
    "first byte ms",
    "recovery s",
]


def table_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in results:
        if "error" in r or "skipped" in r:
            why = r.get("error") or r.get("skipped")
            rows.append(
                [PROFILE_TITLES[r["profile"]], CARRIER_TITLES[r["carrier"]], f"({why})"]
                + [""] * (len(HEADER) - 3)
            )
            continue
        s, b, t = r["small"], r["small_with_bulk"], r["transfer"]
        rec = r["recovery"]["seconds"]
        rows.append(
            [
                PROFILE_TITLES[r["profile"]],
                CARRIER_TITLES[r["carrier"]],
                _fmt(s["req_s"]),
                _fmt(s["p50_ms"], 1),
                _fmt(s["p99_ms"], 1),
                _fmt(s["p999_ms"], 1),
                _fmt(b["req_s"]),
                _fmt(b["p50_ms"], 1),
                _fmt(b["p99_ms"], 1),
                _fmt(b["p999_ms"], 1),
                _fmt(b["bulk_mbit_s"], 1),
                _fmt(t["mbit_s"], 1) + ("" if t["complete"] else "*"),
                _fmt(r["first_byte_ms"]["median"], 0),
                "none" if rec is None else _fmt(rec, 2),
            ]
        )
    return rows


def markdown(rows: list[list[str]], meta: dict[str, Any]) -> str:
    m = meta["machine"]
    plan = meta["plan"]
    lines = [
        f"Measured {meta['date']} on {m['cores']} cores ({m['cpu_model']}), Linux {m['kernel']}, "
        f"edgerq {meta['commit'][:10]}{' (dirty)' if meta['dirty'] else ''}; "
        f"link {LINK_RATE_MBIT:g} Mbit/s each way, the RTT split evenly, loss each way; "
        f"TCP congestion control {meta['tcp_congestion_control']}"
        + (f", tcp_notsent_lowat {meta['tcp_notsent_lowat']}" if meta["tcp_notsent_lowat"] else "")
        + "; "
        f"{CONNECTIONS} connections of {SMALL}-byte request/response for {plan['small_s']:g} s; "
        f"* = transfer stopped at {plan['transfer_limit_s']:g} s.",
        "",
        *markdown_table(HEADER, rows),
    ]
    return "\n".join(lines) + "\n"


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [HEADER, *rows]
    )


def chart(results: list[dict[str, Any]], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter, NullFormatter
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'): no chart"
    profiles = list(dict.fromkeys(r["profile"] for r in results))
    fig, axes = plt.subplots(
        len(profiles),
        2,
        figsize=(11, 3.2 * len(profiles)),
        squeeze=False,
        constrained_layout=True,
        sharex="row",
    )
    quantiles = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
    for row, profile in enumerate(profiles):
        for col, (key, what) in enumerate(
            (("small", "alone"), ("small_with_bulk", "with a bulk download"))
        ):
            axis = axes[row][col]
            for i, carrier in enumerate(CARRIERS):
                cell = next(
                    (r for r in results if r["profile"] == profile and r["carrier"] == carrier),
                    None,
                )
                if cell is None or key not in cell or not cell[key]["cdf"]:
                    continue
                qs = [q for q, _ in cell[key]["cdf"] if q < 1.0]
                ms = [v for q, v in cell[key]["cdf"] if q < 1.0]
                axis.plot(ms, qs, label=CARRIER_TITLES[carrier], color=f"C{i}")
            axis.set_xscale("log")
            axis.set_yscale("logit")
            axis.set_ylim(0.01, 0.9995)
            axis.set_yticks(quantiles, [f"{q:.1%}".replace(".0%", "%") for q in quantiles])
            axis.yaxis.set_minor_formatter(NullFormatter())
            axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.xaxis.set_minor_formatter(NullFormatter())
            axis.grid(alpha=0.3, which="both")
            axis.set_title(f"{PROFILE_TITLES[profile]}: small requests {what}", fontsize=9)
            axis.set_xlabel("latency, ms (log)", fontsize=8)
            axis.set_ylabel("share of requests at most", fontsize=8)
            axis.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    tmp = path.with_name(path.name + ".tmp")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return None


def chart_title(meta: dict[str, Any]) -> str:
    return (
        f"edgerq carriers over an emulated WAN ({LINK_RATE_MBIT:g} Mbit/s, TCP "
        f"{meta.get('tcp_congestion_control', '?')}), {meta['date']}, {meta['commit'][:10]}"
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
    p.add_argument("--results", type=Path, default=RESULTS, help="results directory")
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
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (the results say so)",
    )
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
            {"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
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
                    top = Topology(link, stack, tools)
                    try:
                        _, sp = top.edgerq(carrier)
                        before = link.stats()
                        cell = measure_cell(top, carrier, args.plan, sp)
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
    if dirty and not args.allow_dirty:
        log(DIRTY_REFUSAL)
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
    print(text_table(rows))
    base = args.results / args.name
    write_json(base.with_suffix(".json"), {**meta, "results": results})
    write_atomic(base.with_suffix(".md"), markdown(rows, meta))
    problem = chart(results, base.with_suffix(".png"), chart_title(meta))
    wrote = [base.with_suffix(".json"), base.with_suffix(".md")]
    if problem:
        log(problem)
    else:
        wrote.append(base.with_suffix(".png"))
    print("wrote " + ", ".join(str(p) for p in wrote))
    failed = [r for r in results if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; processes stopped, namespaces removed")
        sys.exit(130)
