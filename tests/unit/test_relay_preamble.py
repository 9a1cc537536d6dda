"""A LocalConnection's preamble (the SP's PROXY header) goes out before any stream data."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from edgerq.relay import LocalConnection
from edgerq.stream import Stream


class FakePipe:
    paused = False


class FakeStream:
    """What LocalConnection uses of a Stream: credit, and the consumed counter."""

    def __init__(self) -> None:
        self.pipe = FakePipe()
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
