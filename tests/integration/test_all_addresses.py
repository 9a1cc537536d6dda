"""An SP pipe with ``<all_addresses>``, against a real SC on loopback.

The SC and the SP run in this process (the SP with an injected resolver, the
stand-in for a Swarm ``tasks.<service>`` name), so the test decides what the
name resolves to from one moment to the next. The Swarm suite covers the same
with real DNS and several SC replicas.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from edgerq.config import load_consumer, load_provider
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.addresses import sorted_addresses
from edgerq.sp.daemon import ServiceProvider

SERVICE = uuid.UUID("7a7a7a7a-1111-2222-3333-444444444444")


async def until(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


async def round_trip(port: int, payload: bytes) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    writer.write_eof()
    got = await asyncio.wait_for(reader.read(-1), 15)
    writer.close()
    return hashlib.sha256(got).hexdigest()


class Dns:
    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)

    async def __call__(self, host: str, port: int) -> list[str]:
        assert host == "tasks.sc"
        return sorted_addresses(self.addresses)


def write_consumer(tmp_path: Path) -> Path:
    """The SC's config: every port 0, read back from the running SC."""
    path = tmp_path / "consumer.xml"
    path.write_text(
        "<service_consumer><listener><port>0</port></listener><services><service>"
        f"<uuid>{SERVICE}</uuid><name>echo</name><port>0</port></service></services>"
        "</service_consumer>"
    )
    return path


def write_provider(tmp_path: Path, pipe_port: int, backend: int) -> Path:
    path = tmp_path / "provider.xml"
    path.write_text(
        "<service_provider><pipes><pipe><name>web</name><hostname>tasks.sc</hostname>"
        f"<port>{pipe_port}</port><all_addresses>yes</all_addresses>"
        "<resolve_interval>0.5</resolve_interval><services><service>"
        f"<uuid>{SERVICE}</uuid><name>echo</name><hostname>127.0.0.1</hostname>"
        f"<port>{backend}</port></service></services></pipe></pipes></service_provider>"
    )
    return path


def run(tmp_path: Path, body: Callable[..., Awaitable[None]]) -> None:
    async def main() -> None:
        backend = await asyncio.start_server(echo, "127.0.0.1", 0)
        backend_port = backend.sockets[0].getsockname()[1]
        sc = ServiceConsumer(load_consumer(write_consumer(tmp_path), env={}))
        await sc.start()
        bound = sc.bound()
        service_port = bound["services"][str(SERVICE)]
        provider = write_provider(tmp_path, bound["listeners"]["tcp"], backend_port)
        dns = Dns("127.0.0.1")
        sp = ServiceProvider(load_provider(provider, env={}), resolver=dns)
        await sp.start()
        try:
            await body(sc, sp, dns, service_port)
        finally:
            await sp.stop()
            await sc.stop()
            backend.close()

    asyncio.run(main())


def sc_pipes(sc: ServiceConsumer) -> list[str]:
    return [p["sp"] for p in sc.status()["pipes"]]


def test_pipes_follow_the_addresses_the_name_resolves_to(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096

    async def body(sc: ServiceConsumer, sp: ServiceProvider, dns: Dns, port: int) -> None:
        await until(lambda: sc_pipes(sc) == ["web@127.0.0.1"], "the pipe to 127.0.0.1")
        assert await round_trip(port, payload) == hashlib.sha256(payload).hexdigest()
        first = sp.pipes[0]

        # a second replica appears: a second pipe dials it; the first is left alone
        dns.addresses = ["127.0.0.1", "127.0.0.2"]
        await until(lambda: len(sp.pipes) == 2, "a pipe to the new address")
        assert [p.config.name for p in sp.pipes] == ["web@127.0.0.1", "web@127.0.0.2"]
        assert sp.pipes[0] is first
        assert [p["name"] for p in sp.status()["pipes"]] == ["web@127.0.0.1", "web@127.0.0.2"]
        assert await round_trip(port, payload) == hashlib.sha256(payload).hexdigest()

        # the first replica vanishes from the name: its pipe is drained and closed
        dns.addresses = ["127.0.0.2"]
        await until(lambda: sc_pipes(sc) == [], "the SC to lose the vanished address's pipe")
        assert [p.config.name for p in sp.pipes] == ["web@127.0.0.2"]

        # and comes back
        dns.addresses = ["127.0.0.2", "127.0.0.1"]
        await until(lambda: sc_pipes(sc) == ["web@127.0.0.1"], "the pipe to 127.0.0.1 again")
        assert await round_trip(port, payload) == hashlib.sha256(payload).hexdigest()

    run(tmp_path, body)


def test_reload_gives_new_pipes_the_configured_limits(tmp_path: Path) -> None:
    """A reload that replaced a pipe (here: a changed pipe setting) built the new pipe
    with the default limits: streams_per_pipe 7 became 16384."""

    async def body(sc: ServiceConsumer, sp: ServiceProvider, dns: Dns, port: int) -> None:
        await until(lambda: sc_pipes(sc) == ["web@127.0.0.1"], "the pipe to 127.0.0.1")
        path = tmp_path / "provider.xml"
        path.write_text(
            path.read_text()
            .replace(
                "<service_provider>",
                "<service_provider><limits><streams_per_pipe>7</streams_per_pipe></limits>",
            )
            .replace("<resolve_interval>0.5", "<resolve_interval>0.6")
        )
        await sp.reload(load_provider(path, env={}))
        assert [p.limits.streams_per_pipe for p in sp.pipes] == [7]

    run(tmp_path, body)
