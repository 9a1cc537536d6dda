"""What one SC and one SP cost: the figures behind docs/scaling.md.

For each carrier (tcp, udp), against a backend in its own process:

- CPU time of the SC and of the SP per small request (128 bytes each way) on
  16 keep-alive connections, and per new connection (one request each);
- CPU time per MB of a bulk download (4 connections);
- resident memory per idle connection (2,000 held open) and per active one
  (64 downloading at once);
- per pipe: the SC's memory and both daemons' CPU per idle pipe per second
  (heartbeats), with one SP dialling 100 pipes.

CPU is read from the daemons themselves (/proc/PID/stat, user + system), so
the figures hold on a busy machine far better than a rate does. Writes
bench/results/capacity.json (with the commit, whether the tree was dirty, and
the date) and prints a table.

    python -m bench.capacity            # both carriers (about 3 min)
    python -m bench.capacity --quick    # fewer requests, for a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.cli import add_allow_dirty_option, refused
from bench.common import REPO, RESULTS, Skip, machine, provenance, raise_nofile, vm_rss_kib
from bench.daemons import edgerq_argv, start_edgerq
from bench.procs import LOCALHOST, Proc, Stack, free_port, interruptible, log
from bench.report import markdown_table, provenance_line, write_json

TICK = os.sysconf("SC_CLK_TCK")
SMALL = 128
MIB = 1024 * 1024


# --- the backend, in its own process -----------------------------------------------------


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """``E``: echo every chunk back. ``B<n>\\n``: send n bytes, then close."""
    try:
        mode = await reader.readexactly(1)
        if mode == b"E":
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        else:
            n = int(await reader.readline())
            chunk = b"x" * 65536
            while n > 0:
                writer.write(chunk[: min(n, len(chunk))])
                n -= len(chunk)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _backend(port: int) -> None:
    server = await asyncio.start_server(_serve, LOCALHOST, port, backlog=4096)
    async with server:
        await server.serve_forever()


# --- measuring ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


@dataclass
class Daemons:
    sc: Proc
    sp: Proc

    def cpu(self) -> tuple[float, float]:
        return cpu_seconds(self.sc.pid), cpu_seconds(self.sp.pid)

    def rss(self) -> tuple[int, int]:
        return vm_rss_kib(self.sc.pid), vm_rss_kib(self.sp.pid)


async def cpu_of(daemons: Daemons, work: Callable[[], Awaitable[int]]) -> dict[str, float]:
    """Run ``work`` (which returns how many units it did); CPU microseconds per unit."""
    sc0, sp0 = daemons.cpu()
    started = time.monotonic()
    units = await work()
    elapsed = time.monotonic() - started
    sc1, sp1 = daemons.cpu()
    return {
        "units": units,
        "seconds": round(elapsed, 2),
        "sc_us": round((sc1 - sc0) * 1e6 / units, 1),
        "sp_us": round((sp1 - sp0) * 1e6 / units, 1),
    }


async def keepalive(port: int, connections: int, per_connection: int) -> int:
    payload = b"q" * SMALL

    async def one() -> None:
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        writer.write(b"E")
        for _ in range(per_connection):
            writer.write(payload)
            await reader.readexactly(SMALL)
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return connections * per_connection


async def new_connections(port: int, concurrency: int, total: int) -> int:
    payload = b"E" + b"q" * (SMALL - 1)
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            reader, writer = await asyncio.open_connection(LOCALHOST, port)
            writer.write(payload)
            await reader.readexactly(SMALL - 1)
            writer.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total


async def download(port: int, size: int) -> int:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(b"B%d\n" % size)
    got = 0
    while data := await reader.read(262144):
        got += len(data)
    writer.close()
    if got != size:
        raise RuntimeError(f"bulk download: {got} of {size} bytes arrived")
    return got


async def bulk(port: int, connections: int, size: int) -> int:
    sizes = await asyncio.gather(*(download(port, size) for _ in range(connections)))
    return round(sum(sizes) / 1e6)  # MB


async def held_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection(LOCALHOST, port)
        writer.write(b"Ex")
        await reader.readexactly(1)  # the stream is open end to end
        writers.append(writer)
    return writers


async def settle_rss(daemons: Daemons) -> tuple[int, int]:
    await asyncio.sleep(1.0)
    return daemons.rss()


async def memory(daemons: Daemons, port: int, idle: int, active: int) -> dict[str, float]:
    sc0, sp0 = await settle_rss(daemons)
    writers = await held_connections(port, idle)
    sc1, sp1 = await settle_rss(daemons)
    for w in writers:
        w.close()
    await asyncio.sleep(1.0)
    # active: downloads kept running while the memory is read
    base_sc, base_sp = await settle_rss(daemons)
    downloads = [asyncio.ensure_future(download(port, 256 * MIB)) for _ in range(active)]
    await asyncio.sleep(3.0)
    sc2, sp2 = daemons.rss()
    for d in downloads:
        d.cancel()
    await asyncio.gather(*downloads, return_exceptions=True)
    return {
        "idle_connections": idle,
        "sc_kib_per_idle": round((sc1 - sc0) / idle, 2),
        "sp_kib_per_idle": round((sp1 - sp0) / idle, 2),
        "active_connections": active,
        "sc_kib_per_active": round((sc2 - base_sc) / active, 1),
        "sp_kib_per_active": round((sp2 - base_sp) / active, 1),
        "sc_rss_kib": base_sc,
        "sp_rss_kib": base_sp,
    }


async def pipes_cost(stack: Stack, carrier: str, backend: int, pipes: int) -> dict[str, float]:
    """One SC, one SP dialling ``pipes`` pipes to it: memory and heartbeat CPU per pipe."""
    tunnel = start_edgerq(stack, f"pipes-{carrier}", backend, protocol=carrier)
    sp_conf = stack.path(f"pipes-{carrier}-provider.xml")
    one = sp_conf.read_text()
    head, rest = one.split("<pipes>", 1)
    body, tail = rest.split("</pipes>", 1)
    many = "".join(body.replace("<name>", f"<name>p{i}-", 1) for i in range(pipes))
    sp_conf.write_text(f"{head}<pipes>{many}</pipes>{tail}")
    stack.stop(tunnel.sp)
    sc_before = vm_rss_kib(tunnel.sc.pid)
    sp = stack.start(f"pipes-{carrier}-sp2", edgerq_argv("sp", sp_conf), _env(tunnel.sc))
    deadline = time.monotonic() + 60
    while sp.log_text().count("registered") < pipes:
        sp.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sp.log_text().count('registered')} of {pipes} pipes up")
        await asyncio.sleep(0.2)
    await asyncio.sleep(2.0)
    sc_after = vm_rss_kib(tunnel.sc.pid)
    daemons = Daemons(tunnel.sc, sp)
    sc0, sp0 = daemons.cpu()
    window = 10.0
    await asyncio.sleep(window)
    sc1, sp1 = daemons.cpu()
    return {
        "pipes": pipes,
        "sc_kib_per_pipe": round((sc_after - sc_before) / pipes, 1),
        "sc_us_per_pipe_second": round((sc1 - sc0) * 1e6 / pipes / window, 1),
        "sp_us_per_pipe_second": round((sp1 - sp0) * 1e6 / pipes / window, 1),
    }


def _env(sc: Proc) -> dict[str, str]:
    token = Path(f"/proc/{sc.pid}/environ").read_bytes().split(b"\0")
    for item in token:
        if item.startswith(b"EDGERQ_AUTH_TOKEN="):
            return {"EDGERQ_AUTH_TOKEN": item.split(b"=", 1)[1].decode()}
    return {"EDGERQ_AUTH_TOKEN": secrets.token_hex(16)}


async def carrier_figures(stack: Stack, carrier: str, backend: int, quick: bool) -> dict[str, Any]:
    tunnel = start_edgerq(stack, carrier, backend, protocol=carrier, max_connections=5000)
    daemons = Daemons(tunnel.sc, tunnel.sp)
    port = tunnel.service_port
    scale = 0.2 if quick else 1.0
    await keepalive(port, 16, 100)  # warm up
    figures: dict[str, Any] = {
        "keepalive_16": await cpu_of(daemons, lambda: keepalive(port, 16, int(2000 * scale))),
        "new_connection_16": await cpu_of(
            daemons, lambda: new_connections(port, 16, int(3000 * scale))
        ),
        "bulk_per_mb_4": await cpu_of(daemons, lambda: bulk(port, 4, int(64 * MIB * scale))),
        "memory": await memory(daemons, port, int(2000 * scale), 64),
    }
    stack.stop(tunnel.sp)
    stack.stop(tunnel.sc)
    figures["pipes"] = await pipes_cost(stack, carrier, backend, 20 if quick else 100)
    return figures


def table(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []

    def row(label: str, pick: Callable[[dict[str, Any], str], Any]) -> None:
        cells = [label]
        for carrier in ("tcp", "udp"):
            figures = results["carriers"].get(carrier)
            for side in ("sc", "sp"):
                cells.append("n/a" if figures is None else str(pick(figures, side)))
        rows.append(cells)

    row("CPU µs per small request (keep-alive, 16)", lambda f, s: f["keepalive_16"][f"{s}_us"])
    row("CPU µs per new connection (16 at once)", lambda f, s: f["new_connection_16"][f"{s}_us"])
    row("CPU µs per MB (bulk download, 4 conns)", lambda f, s: f["bulk_per_mb_4"][f"{s}_us"])
    row("RSS KiB per idle connection", lambda f, s: f["memory"][f"{s}_kib_per_idle"])
    row("RSS KiB per active connection (64 downloading)",
        lambda f, s: f["memory"][f"{s}_kib_per_active"])  # fmt: skip
    row("RSS KiB per pipe (SC)",
        lambda f, s: f["pipes"]["sc_kib_per_pipe"] if s == "sc" else "")  # fmt: skip
    row("CPU µs per idle pipe per second (heartbeats)",
        lambda f, s: f["pipes"][f"{s}_us_per_pipe_second"])  # fmt: skip
    header = ["", "tcp SC", "tcp SP", "udp SC", "udp SP"]
    return "\n".join(markdown_table(header, rows, left=len(header)))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "quick": args.quick,
        "carriers": {},
        "skipped": {},
    }
    with Stack("edgerq-capacity-") as stack:
        backend_port = free_port()
        backend = stack.start(
            "backend",
            [sys.executable, "-m", "bench.capacity", "--backend", str(backend_port)],
            {"PYTHONPATH": str(REPO)},
        )
        backend.wait_port(backend_port)
        for carrier in args.carriers:
            log(f"capacity: {carrier} carrier")
            try:
                results["carriers"][carrier] = await carrier_figures(
                    stack, carrier, backend_port, args.quick
                )
            except Skip as exc:
                results["skipped"][carrier] = str(exc)
                log(f"capacity: {carrier} skipped: {exc}")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fifth of the work")
    parser.add_argument("--carriers", nargs="+", default=["tcp", "udp"], choices=["tcp", "udp"])
    parser.add_argument("--out", type=Path, default=RESULTS / "capacity.json")
    parser.add_argument("--backend", type=int, help=argparse.SUPPRESS)
    add_allow_dirty_option(parser)
    args = parser.parse_args(argv)
    if args.backend:
        asyncio.run(_backend(args.backend))
        return 0
    prov = provenance()  # the code measured: the tree may change during the run
    if refused(prov, args.allow_dirty):
        return 2
    with interruptible():
        results = asyncio.run(run(args))
    results.update(commit=prov["revision"], commit_full=prov["commit"], dirty=prov["dirty"])
    results["table"] = table(results)
    write_json(args.out, results)
    print(provenance_line(prov))
    print(f"capacity at {results['commit']}, {results['date']}:")
    print(results["table"])
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
