"""The SP's PROXY header: built from OPEN, written before any stream data."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, cast

import pytest

from edgerq.config.model import PipeConfig, ProviderService
from edgerq.pipe import MuxPipe
from edgerq.protocol.messages import Open
from edgerq.provider_pipe import ProviderPipe
from edgerq.relay import LocalConnection
from edgerq.stream import Stream


class FakeStream:
    """What LocalConnection uses of a Stream: credit, and the consumed counter."""

    def __init__(self) -> None:
        self.window = 1024 * 1024
        self.send_credit = self.window
        self.finished = False
        self.sink: Any = None
        self.consumed_totals: list[int] = []

    def consumed(self, total: int) -> None:
        self.consumed_totals.append(total)


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.reading = True

    def get_extra_info(self, name: str) -> object:
        return {"peername": ("203.0.113.9", 443), "sockname": ("192.0.2.1", 51000)}.get(name)

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def write(self, data: bytes | memoryview) -> None:
        self.written.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


@pytest.mark.parametrize("preamble", [b"PROXY UNKNOWN\r\n", b""], ids=["preamble", "none"])
def test_data_that_arrived_while_connecting_follows_the_preamble(preamble: bytes) -> None:
    stream = FakeStream()
    transport = FakeTransport()
    conn = LocalConnection(4096, preamble=preamble)
    conn.bind(cast(Stream, stream))
    conn.on_data(b"one")  # frames that arrived before the service accepted
    conn.on_data(memoryview(b"two"))
    conn.connection_made(cast(asyncio.Transport, transport))
    conn.on_data(b"three")
    assert transport.written == [preamble, b"one", b"two", b"three"][0 if preamble else 1 :]
    # Credit is granted for stream bytes only: the preamble is not the peer's data.
    assert stream.consumed_totals[-1] == len(b"onetwothree")
    assert (conn.peer, conn.local) == ("203.0.113.9:443", "192.0.2.1:51000")


SERVICE = uuid.UUID("11111111-2222-3333-4444-555555555555")


def provider_pipe(version: int) -> ProviderPipe:
    service = ProviderService(SERVICE, "web", "127.0.0.1", 8080, proxy_protocol=version)
    return ProviderPipe(PipeConfig("pipe1", "127.0.0.1", 2080, (service,)))


@pytest.mark.parametrize("version", [1, 2])
def test_sp_builds_the_header_from_open(version: int, caplog: pytest.LogCaptureFixture) -> None:
    request = Open(9, SERVICE, 65536, 4096, "203.0.113.9:51000", "198.51.100.1:443")
    with caplog.at_level(logging.WARNING, logger="edgerq.sp"):
        header = provider_pipe(version)._proxy_header(cast(MuxPipe, "pipe"), request, version)
    if version == 1:
        assert header == b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 443\r\n"
    else:
        assert header.endswith(bytes([203, 0, 113, 9, 198, 51, 100, 1, 0xC7, 0x38, 0x01, 0xBB]))
    assert not caplog.records


@pytest.mark.parametrize("version", [1, 2])
def test_sp_warns_when_the_client_address_is_unusable(
    version: int, caplog: pytest.LogCaptureFixture
) -> None:
    request = Open(9, SERVICE, 65536, 4096, "?", "198.51.100.1:443")
    with caplog.at_level(logging.WARNING, logger="edgerq.sp"):
        header = provider_pipe(version)._proxy_header(cast(MuxPipe, "pipe"), request, version)
    assert header in (b"PROXY UNKNOWN\r\n", b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")
    assert header.startswith(b"PROXY") == (version == 1)
    [record] = caplog.records
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    assert "pipe stream 9" in message and "'?'" in message
    assert ("PROXY UNKNOWN" if version == 1 else "LOCAL") in message
