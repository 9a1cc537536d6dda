"""QuicPipe's send backlog: the local sockets stop being read while qh3 holds more than
SEND_HIGH_WATER untransmitted, and are read again once it holds SEND_LOW_WATER or less,
however the bytes were handed to it (many small flushes or one large one)."""

from __future__ import annotations

import asyncio

from edgerq.carriers.quic.pipe import SEND_HIGH_WATER, SEND_LOW_WATER, QuicPipe
from edgerq.pipe.interface import Role
from edgerq.pipe.settings import PipeSettings
from tests.unit.fakes import Owner

STREAM = 1
CHUNK = 16 * 1024


class HoldingQuic:
    """qh3's connection as far as a QuicPipe uses it: holds what it is given until
    ``transmitted`` says the network took it (none of it, unless told)."""

    def __init__(self) -> None:
        self.unsent = 0
        self.received = 0

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.unsent += len(data)
        self.received += len(data)

    def transmitted(self, size: int | None = None) -> None:
        self.unsent = 0 if size is None else max(0, self.unsent - size)

    def get_send_buffer_size(self, stream_id: int | None = None) -> int:
        return self.unsent if stream_id is None else 0

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        pass


class Link:
    def __init__(self, quic: HoldingQuic, *, sends: bool) -> None:
        self.quic = quic
        self.is_client = False
        self._sends = sends

    def transmit(self) -> None:
        if self._sends:
            self.quic.transmitted()

    def close_transport_later(self) -> None:
        pass


def _pipe(quic: HoldingQuic, *, sends: bool) -> QuicPipe:
    pipe = QuicPipe(PipeSettings(Role.CONSUMER), Owner())
    pipe.attach(Link(quic, sends=sends))  # type: ignore[arg-type]
    return pipe


async def _hand_over(pipe: QuicPipe, size: int) -> None:
    """Queue ``size`` bytes in CHUNK frames, one flush per frame (as a slow reader's
    socket would be read), until the pipe pauses or all is handed over."""
    for _ in range(size // CHUNK):
        if pipe.paused:
            return
        pipe.send_data(STREAM, b"x" * CHUNK, CHUNK)
        await asyncio.sleep(0)  # the flush


def test_a_peer_that_takes_nothing_pauses_the_local_sockets_until_qh3_sends() -> None:
    async def run() -> None:
        quic = HoldingQuic()
        pipe = _pipe(quic, sends=False)
        await _hand_over(pipe, 4 * SEND_HIGH_WATER)
        assert pipe.paused
        # Paused no later than the first flush past the mark: qh3 holds about the mark.
        assert SEND_HIGH_WATER < quic.unsent <= SEND_HIGH_WATER + 2 * CHUNK
        quic.transmitted(quic.unsent - SEND_LOW_WATER - 1)  # not enough yet
        pipe.end_batch()  # acknowledgements arrived
        await asyncio.sleep(0)
        assert pipe.paused
        quic.transmitted(1)
        pipe.end_batch()
        await asyncio.sleep(0)
        assert not pipe.paused

    asyncio.run(run())


def test_a_peer_that_takes_everything_never_pauses_the_local_sockets() -> None:
    async def run() -> None:
        quic = HoldingQuic()
        pipe = _pipe(quic, sends=True)
        await _hand_over(pipe, 4 * SEND_HIGH_WATER)
        assert not pipe.paused and quic.received >= 4 * SEND_HIGH_WATER

    asyncio.run(run())


def test_a_large_write_onto_a_backlog_pauses_at_once() -> None:
    async def run() -> None:
        quic = HoldingQuic()
        pipe = _pipe(quic, sends=False)
        await _hand_over(pipe, SEND_HIGH_WATER // 2)
        assert not pipe.paused
        # One read of a local socket that would take qh3 past the mark: paused
        # before the flush, so no other socket is read in this loop iteration.
        pipe.send_data(STREAM, b"y" * (SEND_HIGH_WATER // 2 + CHUNK), CHUNK)
        assert pipe.paused
        # And not when qh3 has sent what it held meanwhile.
        await asyncio.sleep(0)
        quic.transmitted()
        pipe.end_batch()
        await asyncio.sleep(0)
        assert not pipe.paused
        pipe.send_data(STREAM, b"z" * (SEND_HIGH_WATER // 2 + CHUNK), CHUNK)
        assert not pipe.paused

    asyncio.run(run())
