"""Failover in memory: an SP dies while the SC waits for its OPEN_OK, and the client's
connection is opened again on another SP's pipe with its first bytes replayed.

The real SC and two real SPs run in one event loop, their pipes joined by the
memory carrier; only the client and the echo service use loopback sockets.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import pytest

from edgerq.carriers.tcp import TcpPipe
from edgerq.config.model import PipeConfig, ProviderConfig, ProviderService, Secret
from edgerq.protocol.frames import MAX_PAYLOAD, FrameDecoder, FrameType
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider
from tests.unit.carriers.test_memory import SERVICE, consumer, echo_service, run
from tests.unit.fakes import until


def provider(sc: ServiceConsumer, name: str, backend_port: int) -> ServiceProvider:
    pipe = PipeConfig(
        name=name,
        hostname="127.0.0.1",
        port=sc.listener_addresses["memory"][1],
        services=(ProviderService(SERVICE, "echo", "127.0.0.1", backend_port),),
        protocol="memory",  # type: ignore[arg-type]
        auth_token=Secret("t"),
    )
    return ServiceProvider(ProviderConfig(path=Path(f"{name}.xml"), pipes=(pipe,)))


def dies_on_first_data(pipe: TcpPipe) -> list[int]:
    """From now on, ``pipe`` aborts (an SP killed) the moment a DATA frame reaches
    it, before it reads anything else: the OPEN it got with it is never answered.
    Returns the DATA bytes it saw (then lost)."""
    decoder = FrameDecoder(MAX_PAYLOAD, stream_data=True)
    seen: list[int] = []

    def receive(data: bytes) -> None:
        for ftype, _, payload in decoder.receive(data):
            if ftype == FrameType.DATA:
                seen.append(len(payload))
        if seen:
            pipe.abort("SP killed while the SC waited for OPEN_OK")

    pipe.data_received = receive  # type: ignore[method-assign]
    return seen


def retries(sc: ServiceConsumer, cause: str) -> float:
    labels = {"service": "echo", "cause": cause}
    value = sc.metrics.registry.get_sample_value("edgerq_stream_retries_total", labels)
    return 0.0 if value is None else value


@run
async def test_an_sp_that_dies_mid_open_loses_the_client_nothing() -> None:
    backend = await echo_service()
    port = backend.sockets[0].getsockname()[1]
    sc = consumer()
    await sc.start()
    doomed, spare = provider(sc, "doomed", port), provider(sc, "spare", port)
    await doomed.start()
    try:
        await asyncio.wait_for(doomed.pipes[0].ready.wait(), 10)
        doomed_pipe = doomed.pipes[0].pipe
        assert isinstance(doomed_pipe, TcpPipe)
        lost = dies_on_first_data(doomed_pipe)

        payload = os.urandom(12_000)  # under the credit a stream has before OPEN_OK
        reader, writer = await asyncio.open_connection(*sc.service_addresses[SERVICE])
        writer.write(payload)
        await until(lambda: bool(lost))  # the doomed SP got the OPEN and the bytes...
        assert sum(lost) > 0
        await until(lambda: retries(sc, "pipe_lost") == 1)  # ...and died before OPEN_OK
        await spare.start()  # the connection waits (within request_ttl) for a pipe

        echoed = await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        assert [p.name for p in sc.registry.pipes_for(SERVICE)] == ["spare"]
        writer.write(b"and more")  # the connection goes on, on the spare pipe
        assert await asyncio.wait_for(reader.readexactly(8), 10) == b"and more"
        writer.close()
        await until(lambda: not sc.connections)
        assert retries(sc, "pipe_lost") == 1 and retries(sc, "refused") == 0
    finally:
        await spare.stop()
        await doomed.stop()
        await sc.stop()
        backend.close()


def test_the_replay_is_logged_with_its_size(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    test_an_sp_that_dies_mid_open_loses_the_client_nothing()
    (line,) = [
        r.getMessage() for r in caplog.records if "opening it on another pipe" in r.getMessage()
    ]
    assert "pipe lost before the service answered" in line and "(12000 B to replay)" in line
