"""The SP's PROXY header: built from OPEN, written before any stream data."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import cast

import pytest

from edgerq.carriers import memory
from edgerq.config.model import ListenerConfig, PipeConfig, ProviderService
from edgerq.labels import Outcome
from edgerq.pipe.interface import MuxPipe, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.runtime.relay import LocalConnection
from edgerq.sp.dialer import ProviderPipe
from tests.unit.fakes import Owner, SocketTransport, Writer

SERVICE = uuid.UUID("11111111-2222-3333-4444-555555555555")


@pytest.mark.parametrize("preamble", [b"PROXY UNKNOWN\r\n", b""], ids=["preamble", "none"])
def test_data_that_arrived_while_connecting_follows_the_preamble(preamble: bytes) -> None:
    stream = Stream(Writer(), 1, SERVICE, window=1024 * 1024, max_frame=4096)
    transport = SocketTransport(peer=("203.0.113.9", 443), local=("192.0.2.1", 51000))
    conn = LocalConnection(4096, preamble=preamble)
    conn.bind(stream)
    conn.on_data(b"one")  # frames that arrived before the service accepted
    conn.on_data(memoryview(b"two"))
    conn.connection_made(cast(asyncio.Transport, transport))
    conn.on_data(b"three")
    assert transport.writes == [preamble, b"one", b"two", b"three"][0 if preamble else 1 :]
    # Credit is granted for stream bytes only: the preamble is not the peer's data.
    assert stream.taken == len(b"onetwothree")
    assert (conn.peer, conn.local) == ("203.0.113.9:443", "192.0.2.1:51000")


class Client:
    """The SC's client end of a stream (nothing to do with what comes back)."""

    def __init__(self) -> None:
        self.answers: list[OpenRefused | None] = []
        self.answered = asyncio.Event()

    def on_data(self, data: bytes | memoryview) -> None:
        pass

    def on_eof(self) -> None:
        pass

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        pass

    def on_credit(self) -> None:
        pass

    def on_pipe_paused(self, paused: bool) -> None:
        pass

    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        self.answers.append(failure)
        self.answered.set()


async def through_a_pipe(version: int, client: str) -> tuple[bytes, MuxPipe, int]:
    """Open a stream reporting ``client`` over an in-memory pipe to a real
    ``ProviderPipe``; returns what its service received first, the SP's pipe and
    the stream id."""
    received: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    async def service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = b""
        while not data.endswith(b"hello"):
            chunk = await reader.read(4096)
            if not chunk:
                break
            data += chunk
        received.set_result(data)
        writer.close()

    server = await asyncio.start_server(service, "127.0.0.1", 0)
    sc = Owner(PipeSettings(Role.CONSUMER))  # accepts every service
    listener = await memory.listen(ListenerConfig(port=0, protocol="memory"), sc)  # type: ignore[arg-type]
    port = server.sockets[0].getsockname()[1]
    provided = ProviderService(SERVICE, "web", "127.0.0.1", port, proxy_protocol=version)
    sp = ProviderPipe(
        PipeConfig("pipe1", "127.0.0.1", listener.address[1], (provided,), protocol="memory")  # type: ignore[arg-type]
    )
    task = asyncio.get_running_loop().create_task(sp.run())
    try:
        await asyncio.wait_for(sp.ready.wait(), 10)
        (pipe,) = sc.authenticated
        sink = Client()
        stream = pipe.open_stream(
            SERVICE,
            window=65536,
            max_frame=4096,
            client=client,
            sink=sink,
            destination="198.51.100.1:443",
        )
        stream.send(b"hello")
        await asyncio.wait_for(sink.answered.wait(), 10)
        assert sink.answers == [None], "OPEN_OK"
        assert sp.pipe is not None
        return await asyncio.wait_for(received, 10), sp.pipe, stream.id
    finally:
        task.cancel()
        sp.close()
        listener.close()
        server.close()


@pytest.mark.parametrize("version", [1, 2])
def test_sp_builds_the_header_from_open(version: int, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edgerq.sp"):
        data, _, _ = asyncio.run(through_a_pipe(version, "203.0.113.9:51000"))
    if version == 1:
        assert data == b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 443\r\nhello"
    else:
        header = data.removesuffix(b"hello")
        assert header.endswith(bytes([203, 0, 113, 9, 198, 51, 100, 1, 0xC7, 0x38, 0x01, 0xBB]))
    assert not [r for r in caplog.records if "PROXY" in r.getMessage()]


@pytest.mark.parametrize("version", [1, 2])
def test_sp_warns_when_the_client_address_is_unusable(
    version: int, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="edgerq.sp"):
        data, pipe, stream_id = asyncio.run(through_a_pipe(version, "?"))
    header = data.removesuffix(b"hello")
    assert header in (b"PROXY UNKNOWN\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
    assert header.startswith(b"PROXY") == (version == 1)
    [record] = [r for r in caplog.records if "PROXY header" in r.getMessage()]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert f"{pipe} stream {stream_id}" in message and "'?'" in message
    assert ("PROXY UNKNOWN" if version == 1 else "LOCAL") in message
