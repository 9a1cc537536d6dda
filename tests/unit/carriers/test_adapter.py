"""The carrier adapters: the one timer kept at the core's deadline, and QUIC's stream mapping.

A ``TcpPipe`` on a transport that never answers: what the core decides with
``now`` (handshake timeout, the abort of a close that does not finish) must
happen on the event loop's timer. Each test waits for the condition, with a
generous bound, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from edgerq import defaults
from edgerq.carriers.adapter import build_pipe
from edgerq.carriers.tcp import TcpPipe
from edgerq.pipe.interface import Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import Frame, FrameDecoder, FrameType, encode_frame
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import CodedReason, GoawayCode, OpenFailure
from tests.unit.fakes import FakeLink, Owner, Sink

SERVICE = uuid.UUID(int=5)


class SilentTransport(asyncio.Transport):
    """Takes what is written; close and abort are only noted (no connection_lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.closed = asyncio.Event()
        self.aborted = asyncio.Event()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.9", 9)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.closed.set()

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()


def test_a_pipe_is_numbered_when_it_connects_not_when_a_dial_builds_it() -> None:
    """uvloop builds the protocol before it connects: an SP whose dials were refused
    must not call its first pipe "pipe 8" while the SC calls it "pipe 1"."""

    async def run() -> None:
        owner = Owner(PipeSettings(Role.PROVIDER, b"k", "sp1"))
        first = build_pipe(TcpPipe, owner)
        first.connection_made(SilentTransport())
        refused = [build_pipe(TcpPipe, owner) for _ in range(3)]  # never connected
        assert all(p.id == 0 and str(p).startswith("pipe ? 'sp1'") for p in refused)
        later = build_pipe(TcpPipe, owner)
        later.connection_made(SilentTransport())
        assert later.id == first.id + 1
        assert str(later) == f"pipe {later.id} 'sp1' (127.0.0.9:9)"

    asyncio.run(run())


def test_a_peer_that_never_says_hello_is_closed_at_the_handshake_timeout() -> None:
    async def run() -> None:
        owner = Owner()
        pipe = TcpPipe(PipeSettings(Role.CONSUMER, b"k", handshake_timeout=0.05), owner)
        transport = SilentTransport()
        pipe.connection_made(transport)
        await asyncio.wait_for(transport.closed.wait(), 10)
        assert pipe.closing and pipe.close_reason == "handshake not completed in time"
        assert b"handshake not completed in time" in transport.written  # the GOAWAY
        pipe.connection_lost(None)
        assert owner.closed == ["handshake not completed in time"] and not owner.authenticated

    asyncio.run(run())


def test_a_close_that_does_not_finish_is_aborted_after_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "CLOSE_TIMEOUT", 0.05)

    async def run() -> None:
        pipe = TcpPipe(PipeSettings(Role.CONSUMER, b"k"), Owner())
        transport = SilentTransport()
        pipe.connection_made(transport)
        pipe.close(GoawayCode.SHUTDOWN, "SC shutting down")
        assert transport.closing and not transport.aborted.is_set()
        await asyncio.wait_for(transport.aborted.wait(), 10)  # the peer never let it finish
        assert pipe.close_reason == "SC shutting down"

    asyncio.run(run())


# --- QuicPipe: one QUIC stream per pipe stream ------------------------------------------


def frames(data: bytes | bytearray) -> list[tuple[FrameType, int, bytes]]:
    return [(FrameType(t), s, bytes(p)) for t, s, p in FrameDecoder().receive(bytes(data))]


def test_quic_streams_carry_one_pipe_stream_each_and_end_with_it() -> None:
    async def run() -> None:
        from edgerq.carriers.quic.pipe import QuicPipe

        pipe = QuicPipe(PipeSettings(Role.CONSUMER), Owner())
        link = FakeLink()
        pipe.attach(link)  # type: ignore[arg-type]
        pipe.quic_ready(("127.0.0.9", 9))
        sp = ProviderHandshake(None, "sp")
        pipe.quic_stream_data(0, sp.start(), False)
        await asyncio.sleep(0)
        ((ftype, _, payload),) = frames(link.quic.sent.pop(0))
        for out in sp.receive(Frame(ftype, 0, payload)):
            pipe.quic_stream_data(0, out, False)
        assert pipe.authenticated
        client = Sink()
        streams = [
            pipe.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=client)
            for _ in range(3)
        ]
        await asyncio.sleep(0)
        assert [s.id for s in streams] == [1, 5, 9]
        for stream in streams:  # each OPEN on the QUIC stream of its own id
            ((ftype, stream_id, _),) = frames(link.quic.sent[stream.id])
            assert (ftype, stream_id) == (FrameType.OPEN, stream.id)
        # The SP refuses stream 5: its QUIC stream is ended here too, nothing stays in use.
        refusal = CodedReason(FrameType.OPEN_FAIL, 5, OpenFailure.CONNECT_REFUSED, "no").encode()
        pipe.quic_stream_data(5, refusal, True)
        await asyncio.sleep(0)
        assert 5 in link.quic.ended and 5 not in pipe.streams
        # Data the SP sent before it knew is dropped, never handed to another stream.
        pipe.quic_stream_data(5, encode_frame(FrameType.DATA, 5, b"late"), False)
        assert pipe.status().unknown_stream_frames == 1 and not pipe.closing
        # A frame that names another stream than its QUIC stream breaks the mapping.
        pipe.quic_stream_data(9, encode_frame(FrameType.DATA, 1, b"x"), False)
        assert pipe.closing and "arrived on QUIC stream 9" in str(pipe.error)

    asyncio.run(run())
