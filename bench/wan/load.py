"""The WAN bench's load, from the SC's namespace through the SC's service port to the
backend behind the SP (``bench.wan.backend``: ``N\\n`` answers N bytes, ``-1\\n``
streams): a new connection's first byte, small requests (with a bulk download beside
them or not), one download alone, and the time a blackout takes to recover from."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from dataclasses import dataclass
from typing import Any

from bench.procs import LOCALHOST, Proc, log
from bench.wan.linkemu import LinkEmulator, in_namespace
from bench.wan.settings import Plan
from bench.wan.topology import SERVICE_PORT

SMALL = 100
"""The bytes of a small answer."""
CONNECTIONS = 32
"""The connections of the small requests."""


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


# --- figures -----------------------------------------------------------------------------


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


def measure_cell(link: LinkEmulator, plan: Plan, sp: Proc) -> dict[str, Any]:
    """Every figure of one profile and carrier, ``sp`` the SP of its pair (whose log says
    when it registers a pipe again)."""
    ns = link.sc_ns
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
    _, until = link.blackout(plan.blackout_s)
    time.sleep(max(0.0, until - time.monotonic()))
    took = asyncio.run(recovery(ns, until, plan.recovery_limit_s))
    cell["recovery"] = {
        "blackout_s": plan.blackout_s,
        "seconds": None if took is None else round(took, 2),
        "pipe_redialed": sp.log_text().count("registered") > registered,
    }
    log(f"    recovery after {plan.blackout_s:g} s blackout: {took} s")
    return cell
