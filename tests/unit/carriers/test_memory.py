"""The real SC and SP in one event loop, their pipe joined in memory.

No daemon processes, no pipe socket, no sleeps: each step waits for the
condition it needs, and the in-memory carrier delivers on the next loop
iteration. Only the service side uses loopback sockets (a client, and an echo
service standing for the real one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from edgerq.carriers import memory
from edgerq.config.model import (
    ConsumerConfig,
    ConsumerService,
    ListenerConfig,
    PipeConfig,
    ProviderConfig,
    ProviderService,
    Secret,
)
from edgerq.pipe.interface import Role
from edgerq.pipe.settings import PipeSettings
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider
from tests.unit.fakes import Owner, until

SERVICE = uuid.UUID(int=0xEC40)


async def echo_service() -> asyncio.Server:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def consumer(token: str | None = "t") -> ServiceConsumer:
    return ServiceConsumer(
        ConsumerConfig(
            path=Path("memory-sc.xml"),
            listeners=(ListenerConfig(port=0, protocol="memory"),),  # type: ignore[arg-type]
            services=(ConsumerService(uuid=SERVICE, name="echo", port=0),),
            auth_token=Secret(token) if token else None,
        )
    )


def provider(sc: ServiceConsumer, backend_port: int, token: str | None = "t") -> ServiceProvider:
    pipe = PipeConfig(
        name="p1",
        hostname="127.0.0.1",
        port=sc.listener_addresses["memory"][1],
        services=(ProviderService(SERVICE, "echo", "127.0.0.1", backend_port),),
        protocol="memory",  # type: ignore[arg-type]
        auth_token=Secret(token) if token else None,
    )
    return ServiceProvider(ProviderConfig(path=Path("memory-sp.xml"), pipes=(pipe,)))


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    def sync() -> None:
        asyncio.run(test())

    sync.__name__ = test.__name__
    return sync


@run
async def test_a_connection_through_sc_and_sp_joined_in_memory() -> None:
    backend = await echo_service()
    sc = consumer()
    await sc.start()
    sp = provider(sc, backend.sockets[0].getsockname()[1])
    await sp.start()
    try:
        await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        assert [p.name for p in sc.registry.pipes_for(SERVICE)] == ["p1"]
        reader, writer = await asyncio.open_connection(*sc.service_addresses[SERVICE])
        writer.write(b"hello through memory")
        assert await reader.readexactly(20) == b"hello through memory"
        (service,) = sc.status()["services"]
        assert (service["open"], service["bytes_up"], service["bytes_down"]) == (1, 20, 20)
        writer.close()
        await until(lambda: not sc.connections)
        assert sc.status()["services"][0]["open"] == 0
    finally:
        await sp.stop()
        await sc.stop()
        backend.close()


@run
async def test_a_wrong_token_registers_nothing_and_is_counted() -> None:
    sc = consumer(token="right")
    await sc.start()
    sp = provider(sc, 9, token="wrong")
    await sp.start()
    try:
        auth_failures = sc.metrics.registry.get_sample_value
        await until(lambda: (auth_failures("edgerq_auth_failures_total") or 0) >= 1)
        assert sc.registry.pipes_for(SERVICE) == []
        assert not sp.pipes[0].ready.is_set()
    finally:
        await sp.stop()
        await sc.stop()


@run
async def test_an_sc_that_stops_tells_its_sps() -> None:
    sc = consumer()
    await sc.start()
    sp = provider(sc, 9)
    await sp.start()
    try:
        await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        pipe = sp.pipes[0].pipe
        assert pipe is not None
        await sc.stop()
        reason = await asyncio.wait_for(pipe.closed, 10)
        assert "SC shutting down" in reason
        assert not sp.pipes[0].ready.is_set()
    finally:
        await sp.stop()


@run
async def test_connect_pair_runs_the_handshake_both_ways() -> None:
    sc_owner = Owner(PipeSettings(Role.CONSUMER, b"k"))
    sp_owner = Owner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
    sc_pipe, sp_pipe = memory.connect_pair(sc_owner, sp_owner)
    await until(lambda: sc_pipe.authenticated and sp_pipe.authenticated)
    assert sc_pipe.name == "sp1" and sc_owner.authenticated == [sc_pipe]
    assert sc_owner.created == sc_owner.admitted == [sc_pipe] and sp_owner.created == [sp_pipe]
    sp_pipe.close(reason="done here")
    assert await asyncio.wait_for(sc_pipe.closed, 10) == "SP closed the pipe: done here"
