"""``make bench-scale``: many idle tunneled connections through one pipe.

Starts an SC and an SP (the shipped sample configs, ``max_connections`` raised)
and a small asyncio backend that answers ``REQ <n>`` with ``ANS <n> ok``; opens
``--connections`` (10,000) concurrent connections through the SC's service port
from this one asyncio process, holds them idle, reads the SC's and the SP's
VmRSS before and after, then sends one request on every connection and checks
every answer. Writes ``bench/results/scale.json``.

    python -m bench.scale [--connections 10000] [--batch 500] [--timeout 600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli import add_allow_dirty_option, refused, run_main
from bench.common import REPO, RESULTS, machine, provenance, raise_nofile, vm_rss_kib
from bench.daemons import Tunnel, start_edgerq
from bench.procs import LOCALHOST, Stack, free_port, interruptible, log
from bench.report import provenance_line, write_json

COUNT = b"COUNT\n"


def _use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# --- the backend (a child process: its sockets do not count against the client's limit) ---


async def backend(port: int) -> None:
    open_connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal open_connections
        open_connections += 1
        try:
            while line := await reader.readline():
                if line == COUNT:  # asked directly, not through the tunnel
                    writer.write(b"%d\n" % (open_connections - 1))
                elif line.startswith(b"REQ "):
                    writer.write(b"ANS " + line[4:-1] + b" ok\n")
                else:
                    writer.write(b"ERR\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            open_connections -= 1
            writer.close()

    server = await asyncio.start_server(serve, LOCALHOST, port, backlog=4096)
    log(f"backend listening on {LOCALHOST}:{port}")
    async with server:
        await server.serve_forever()


# --- the client ---------------------------------------------------------------------------


async def backend_count(port: int) -> int:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    try:
        writer.write(COUNT)
        return int(await reader.readline())
    finally:
        writer.close()


async def wait_count(port: int, target: int, timeout: float, *, down: bool = False) -> int:
    """Wait until the backend holds at least (``down``: at most) ``target`` connections."""
    deadline = time.monotonic() + timeout
    while True:
        count = await backend_count(port)
        reached = count <= target if down else count >= target
        if reached or time.monotonic() > deadline:
            return count
        await asyncio.sleep(0.05)


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_all(
    service_port: int, backend_port: int, total: int, batch: int
) -> tuple[list[Conn], float]:
    conns: list[Conn] = []
    started = time.monotonic()
    while len(conns) < total:
        n = min(batch, total - len(conns))
        conns.extend(
            await asyncio.gather(
                *(asyncio.open_connection(LOCALHOST, service_port) for _ in range(n))
            )
        )
        # bound the streams still being opened end to end (request_ttl applies to them)
        reached = await wait_count(backend_port, len(conns), 30.0)
        if reached < len(conns):
            raise RuntimeError(
                f"only {reached} of {len(conns)} connections reached the backend after 30 s"
            )
        if len(conns) % (batch * 4) == 0 or len(conns) == total:
            log(f"  {len(conns)} connections open end to end")
    return conns, time.monotonic() - started


async def ask(index: int, conn: Conn) -> bool:
    reader, writer = conn
    writer.write(b"REQ %d\n" % index)
    await writer.drain()
    return await reader.readline() == b"ANS %d ok\n" % index


def rss(tunnel: Tunnel) -> dict[str, int]:
    return {"sc": vm_rss_kib(tunnel.sc.pid), "sp": vm_rss_kib(tunnel.sp.pid)}


async def measure(tunnel: Tunnel, backend_port: int, args: argparse.Namespace) -> dict[str, Any]:
    total: int = args.connections
    service_port = tunnel.service_port
    # warm up the code paths of a stream before the baseline
    warm = await asyncio.open_connection(LOCALHOST, service_port)
    if not await ask(0, warm):
        raise RuntimeError("the warm-up request through the tunnel got a wrong answer")
    warm[1].close()
    await wait_count(backend_port, 0, 10.0, down=True)
    await asyncio.sleep(1.0)
    before = rss(tunnel)
    log(f"RSS before: SC {before['sc']} KiB, SP {before['sp']} KiB; opening {total} connections")

    conns, open_s = await open_all(service_port, backend_port, total, args.batch)
    await asyncio.sleep(args.settle)
    idle = rss(tunnel)
    held = await backend_count(backend_port)
    per_conn = {k: (idle[k] - before[k]) / total for k in before}
    log(
        f"RSS with {total} idle: SC {idle['sc']} KiB ({per_conn['sc']:.2f} KiB/conn), "
        f"SP {idle['sp']} KiB ({per_conn['sp']:.2f} KiB/conn); backend holds {held}"
    )

    started = time.monotonic()
    answers = await asyncio.gather(
        *(ask(i, c) for i, c in enumerate(conns, 1)), return_exceptions=True
    )
    ask_s = time.monotonic() - started
    ok = sum(1 for a in answers if a is True)
    wrong = sum(1 for a in answers if a is False)
    failed = [a for a in answers if isinstance(a, BaseException)]
    after = rss(tunnel)
    log(f"answers: {ok} right, {wrong} wrong, {len(failed)} failed in {ask_s:.2f} s")

    for _, writer in conns:
        writer.close()
    closed = await wait_count(backend_port, 0, 30.0, down=True)
    return {
        "connections": total,
        "open_s": round(open_s, 2),
        "open_per_s": round(total / open_s, 1),
        "backend_held_idle": held,
        "rss_kib_before": before,
        "rss_kib_idle": idle,
        "rss_kib_after_requests": after,
        "kib_per_connection": {k: round(v, 2) for k, v in per_conn.items()},
        "answers_ok": ok,
        "answers_wrong": wrong,
        "answers_failed": len(failed),
        "first_failure": repr(failed[0]) if failed else None,
        "requests_s": round(ask_s, 2),
        "backend_open_after_close": closed,
        "all_answered": ok == total,
    }


async def client(tunnel: Tunnel, backend_port: int, args: argparse.Namespace) -> dict[str, Any]:
    async with asyncio.timeout(args.timeout):
        return await measure(tunnel, backend_port, args)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=10_000, help="idle connections (10000)")
    p.add_argument("--batch", type=int, default=500, help="connections opened at once (500)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds idle before RSS (2)")
    p.add_argument("--timeout", type=float, default=600.0, help="whole run bound, s (600)")
    p.add_argument("--output", type=Path, default=RESULTS / "scale.json")
    add_allow_dirty_option(p)
    p.add_argument("--backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.connections < 1 or args.batch < 1:
        p.error("--connections and --batch must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loop_kind = _use_uvloop()
    soft, hard = raise_nofile()
    if args.backend is not None:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(backend(args.backend))
        return 0
    needed = args.connections + 200
    if soft < needed:
        log(
            f"the file limit is {soft} (hard {hard}); {args.connections} connections need "
            f"{needed}: raise the hard limit (ulimit -Hn) or pass --connections {soft - 200}"
        )
        return 2
    started = time.time()
    prov = provenance()  # the code measured: the tree may change during the run
    if refused(prov, args.allow_dirty):
        return 2
    with interruptible(), Stack("edgerq-scale-") as stack:
        backend_port = free_port()
        stack.start(
            "backend",
            [sys.executable, "-m", "bench.scale", "--backend", str(backend_port)],
            env={"PYTHONPATH": str(REPO)},
        ).wait_port(backend_port)
        tunnel = start_edgerq(
            stack,
            "scale",
            backend_port,
            max_connections=max(20_000, args.connections + 100),
        )
        result = asyncio.run(client(tunnel, backend_port, args))
    summary: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "revision": prov["revision"],
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "client_loop": loop_kind,
        "nofile_limit": soft,
        "elapsed_s": round(time.time() - started, 1),
        **result,
    }
    per = summary["kib_per_connection"]
    print(provenance_line(prov))
    print(
        f"{summary['connections']} idle tunneled connections through one pipe "
        f"(opened in {summary['open_s']} s, {summary['open_per_s']}/s):\n"
        f"  SC RSS {summary['rss_kib_before']['sc']} -> {summary['rss_kib_idle']['sc']} KiB: "
        f"{per['sc']:.2f} KiB per connection\n"
        f"  SP RSS {summary['rss_kib_before']['sp']} -> {summary['rss_kib_idle']['sp']} KiB: "
        f"{per['sp']:.2f} KiB per connection\n"
        f"  after one request each: SC {summary['rss_kib_after_requests']['sc']} KiB, "
        f"SP {summary['rss_kib_after_requests']['sp']} KiB\n"
        f"  answers: {summary['answers_ok']} right, {summary['answers_wrong']} wrong, "
        f"{summary['answers_failed']} failed, in {summary['requests_s']} s"
    )
    write_json(args.output, summary)
    print(f"wrote {args.output}")
    return 0 if summary["all_answered"] else 1


if __name__ == "__main__":
    run_main(main, "interrupted; processes stopped and temp files removed")
