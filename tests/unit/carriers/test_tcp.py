"""The per-pipe bounds, enforced on a real ``TcpPipe`` over an in-memory transport:
PING floods, control frames queued for a peer that does not read, streams past
``streams_per_pipe``, and a pipe the gate refused."""

from __future__ import annotations

import asyncio

import pytest

from edgerq.carriers.tcp import TcpPipe
from edgerq.labels import Limit
from edgerq.pipe.interface import MAX_PINGS_PER_INTERVAL, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import FrameType, encode_frame
from edgerq.protocol.handshake import ConsumerHandshake
from edgerq.protocol.messages import CodedReason, GoawayCode, Open, encode_ping
from tests.unit.fakes import Owner, frames_of, in_loop

# --- per-pipe bounds on a real TcpPipe with an in-memory transport -----------------


class MemoryTransport(asyncio.Transport):
    """Keeps what the pipe writes; can pretend the peer stopped reading."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.aborted = False
        self.buffered = 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.7", 4242)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True


async def authenticated_sp_side(
    **kwargs: int,
) -> tuple[TcpPipe, MemoryTransport, Owner, list[Limit]]:
    """An SP-side pipe past the handshake (no token), fed by hand."""
    owner = Owner()
    hits = owner.limits
    pipe = TcpPipe(PipeSettings(Role.PROVIDER, None, "sp", **kwargs), owner)
    transport = MemoryTransport()
    pipe.connection_made(transport)
    sc = ConsumerHandshake(None)
    await asyncio.sleep(0)
    (_, _, hello), *_ = frames_of(transport.written)
    from edgerq.protocol.frames import Frame

    for out in sc.receive(Frame(FrameType.HELLO, 0, hello)):
        pipe.data_received(out)
    await asyncio.sleep(0)
    (auth,) = [f for f in frames_of(transport.written) if f[0] is FrameType.AUTH]
    for out in sc.receive(Frame(FrameType.AUTH, 0, auth[2])):
        pipe.data_received(out)
    assert pipe.authenticated
    transport.written.clear()
    return pipe, transport, owner, hits


@in_loop
async def test_a_ping_flood_closes_the_pipe_with_a_reason() -> None:
    pipe, transport, _, hits = await authenticated_sp_side()
    pipe.data_received(encode_ping(FrameType.PING, 1) * MAX_PINGS_PER_INTERVAL)
    assert not pipe.closing  # a peer's worth of PINGs is fine
    pipe.data_received(encode_ping(FrameType.PING, 2))
    assert pipe.closing and hits == ["pings"]
    goaway = [f for f in frames_of(transport.written) if f[0] is FrameType.GOAWAY]
    reason = CodedReason.decode(FrameType.GOAWAY, 0, goaway[0][2])
    assert reason.code == GoawayCode.LIMIT_EXCEEDED
    assert f"more than {MAX_PINGS_PER_INTERVAL} PINGs" in reason.reason


def refused_opens(first: int, count: int) -> bytes:
    """OPENs a pipe with ``max_streams=0`` must each answer with an OPEN_FAIL: a
    peer's way to make us queue control frames without tripping the PING limit."""
    import uuid

    service = uuid.UUID(int=1)
    return b"".join(
        Open(stream_id, service, 65536, 4096, "client").encode()
        for stream_id in range(first, first + count)
    )


def open_fail_size() -> int:
    reason = "the SP's pipe carries its limit of 0 concurrent streams"
    return len(CodedReason(FrameType.OPEN_FAIL, 1, 0, reason).encode())


@in_loop
async def test_control_frames_queued_for_a_peer_that_does_not_read_are_bounded() -> None:
    pipe, transport, _, hits = await authenticated_sp_side(control_backlog=65536, max_streams=0)
    pipe.pause_writing()  # the transport is full: the peer does not read
    transport.buffered = 10 << 20
    answers = 65536 // open_fail_size() + 1  # OPEN_FAILs a real peer could ask for
    pipe.data_received(refused_opens(1, answers))
    assert pipe.closing and transport.aborted
    assert hits.count(Limit.CONTROL_BACKLOG) == 1 and hits[-1] == "control_backlog"
    assert "does not read" in pipe.close_reason


@in_loop
async def test_control_backlog_is_forgotten_once_the_peer_reads_again() -> None:
    pipe, _, _, hits = await authenticated_sp_side(control_backlog=65536, max_streams=0)
    answers = 60000 // open_fail_size()  # just under the limit each time
    for episode in range(3):
        pipe.pause_writing()
        pipe.data_received(refused_opens(1 + episode * answers, answers))
        pipe.resume_writing()
    assert not pipe.closing and "control_backlog" not in hits
    assert hits.count(Limit.STREAMS_PER_PIPE) == 3 * answers


@in_loop
async def test_opens_beyond_streams_per_pipe_are_refused_one_by_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import uuid

    pipe, transport, owner, hits = await authenticated_sp_side(max_streams=2)
    service = uuid.UUID(int=1)
    for stream_id in (1, 2, 3, 4):
        pipe.data_received(Open(stream_id, service, 65536, 4096, "client").encode())
    await asyncio.sleep(0)
    assert [o.stream_id for o in owner.opens] == [1, 2]
    refused = [f for f in frames_of(transport.written) if f[0] is FrameType.OPEN_FAIL]
    assert [f[1] for f in refused] == [3, 4]
    assert (
        "limit of 2 concurrent streams"
        in CodedReason.decode(FrameType.OPEN_FAIL, 3, refused[0][2]).reason
    )
    assert hits == ["streams_per_pipe", "streams_per_pipe"]
    assert not pipe.closing  # the pipe and its two streams go on
    assert sum("refusing new streams" in r.message for r in caplog.records) == 1


@in_loop
async def test_a_refused_pipe_gets_one_goaway_and_no_handshake() -> None:
    from edgerq.pipe.interface import Refusal

    refusal = Refusal(GoawayCode.AUTH_FAILED, "too many failed authentications")
    owner = Owner(refusal=refusal)
    pipe = TcpPipe(PipeSettings(Role.CONSUMER, b"t"), owner)
    transport = MemoryTransport()
    pipe.connection_made(transport)
    assert pipe.refused and transport.closed
    ((ftype, _, payload),) = frames_of(transport.written)
    assert ftype is FrameType.GOAWAY
    assert CodedReason.decode(ftype, 0, payload).reason == refusal.reason
    pipe.data_received(encode_frame(FrameType.HELLO, 0, b"x" * 10))  # ignored: closing
    pipe.connection_lost(None)
    assert owner.closed == [refusal.reason]
