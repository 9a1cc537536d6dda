"""The sans-I/O pipe core: no socket, no event loop, no sleep; the clock is passed in.

Two ``PipeConnection``s (an SC's and an SP's) are joined by hand: ``pump``
moves the bytes each queued to the other. Single-frame behaviour is checked as
tables of (frames in, events and frames out), as h11 tests its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import pytest

from edgerq import defaults
from edgerq.errors import AuthError, LimitExceeded, LocalProtocolError
from edgerq.labels import Limit, Outcome
from edgerq.pipe.bounds import MAX_PINGS_PER_INTERVAL
from edgerq.pipe.connection import PipeConnection
from edgerq.pipe.events import (
    AbortTransport,
    Authenticated,
    CloseTransport,
    OpenRequested,
    PipeEvent,
    Refusal,
    RegisteredReceived,
    RegisterReceived,
    Role,
    State,
)
from edgerq.pipe.outbox import ByteOutbox
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.frames import MAX_PAYLOAD, FrameDecoder, FrameType, encode_frame
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import (
    CodedReason,
    GoawayCode,
    Open,
    Register,
    Registered,
    RegisterStatus,
    ResetCode,
    decode_open_ok,
    encode_ping,
    encode_window,
)
from tests.unit.fakes import Sink

SERVICE = uuid.UUID(int=7)
Out = tuple[FrameType, int, bytes]


@dataclass
class Side:
    core: PipeConnection
    out: ByteOutbox
    events: list[PipeEvent] = field(default_factory=list)
    limits: list[Limit] = field(default_factory=list)

    def sent(self) -> list[Out]:
        """The frames queued since the last look, decoded."""
        decoder = FrameDecoder(MAX_PAYLOAD)
        return [(FrameType(t), s, bytes(p)) for t, s, p in decoder.receive(bytes(self.out.take()))]

    def take_events(self) -> list[PipeEvent]:
        events = list(self.events)
        self.events.clear()  # the core appends to this very list
        return events


def side(role: Role, token: bytes | None = b"k", stream_id_step: int = 1, **settings: int) -> Side:
    out = ByteOutbox()
    name = "" if role is Role.CONSUMER else "sp1"
    events: list[PipeEvent] = []
    limits: list[Limit] = []
    core = PipeConnection(
        PipeSettings(role, token, name, **settings),
        out,
        now=0.0,
        emit=events.append,
        on_limit=limits.append,
        stream_id_step=stream_id_step,
    )
    return Side(core, out, events, limits)


def pump(a: Side, b: Side, now: float = 0.0) -> None:
    """Deliver what each side queued to the other until both are quiet."""
    for _ in range(50):
        x, y = bytes(a.out.take()), bytes(b.out.take())
        if not x and not y:
            return
        if x:
            b.core.receive(x, now)
        if y:
            a.core.receive(y, now)
    raise AssertionError("the two sides never went quiet")


def pair(
    sc_token: bytes | None = b"k", sp_token: bytes | None = b"k", **sp: int
) -> tuple[Side, Side]:
    sc, sp_side = side(Role.CONSUMER, sc_token), side(Role.PROVIDER, sp_token, **sp)
    sc.core.start(0.0)
    sp_side.core.start(0.0)
    pump(sc, sp_side)
    return sc, sp_side


def authenticated(**sp: int) -> tuple[Side, Side]:
    sc, sp_side = pair(b"k", b"k", **sp)
    assert sc.take_events() == [Authenticated()] and sp_side.take_events() == [Authenticated()]
    return sc, sp_side


def state_of(side: Side) -> State:
    """The state now (read through a call: mypy must not assume it from an earlier check)."""
    return side.core.state


def goaway(code: GoawayCode, reason: str) -> Out:
    return (FrameType.GOAWAY, 0, CodedReason(FrameType.GOAWAY, 0, code, reason).encode()[9:])


# --- handshake -------------------------------------------------------------------------


def test_a_handshake_with_the_same_token_opens_both_sides_and_starts_heartbeats() -> None:
    sc, sp = pair()
    assert sc.events == [Authenticated()] and sp.events == [Authenticated()]
    assert sc.core.state is State.OPEN and sp.core.state is State.OPEN
    assert sc.core.name == "sp1"  # the SP's name, learnt in the handshake
    assert sc.core.next_deadline() == defaults.HEARTBEAT_INTERVAL


HANDSHAKE_FAILURES = [
    # (SC's token, SP's token, who finds out, why; the other side is told so)
    (b"right", b"wrong", Role.CONSUMER, "SP's token proof is wrong"),
    (b"right", None, Role.PROVIDER, "the SC requires a token and none is configured for this pipe"),
]


@pytest.mark.parametrize(("sc_token", "sp_token", "finder", "reason"), HANDSHAKE_FAILURES)
def test_a_handshake_with_another_token_fails_with_auth_failed_on_both_sides(
    sc_token: bytes, sp_token: bytes | None, finder: Role, reason: str
) -> None:
    sc, sp = pair(sc_token, sp_token)
    found, told = (sc, sp) if finder is Role.CONSUMER else (sp, sc)
    assert str(found.core.error) == reason and found.core.close_reason == reason
    assert isinstance(told.core.error, AuthError)
    assert told.core.close_reason == f"peer closed the pipe: {reason}"
    for end in (sc, sp):
        assert end.events == [CloseTransport()] and end.core.state is State.CLOSING
        assert not end.core.authenticated


def test_a_handshake_not_completed_in_time_closes_then_aborts() -> None:
    sc = side(Role.CONSUMER, handshake_timeout=10)
    sc.core.start(100.0)
    assert sc.core.next_deadline() == 110.0
    sc.core.handle_timer(109.9)
    assert sc.sent() == [] and sc.events == []
    sc.core.handle_timer(110.0)
    assert sc.sent() == [goaway(GoawayCode.PROTOCOL_ERROR, "handshake not completed in time")]
    assert sc.take_events() == [CloseTransport()] and sc.core.state is State.CLOSING
    assert sc.core.next_deadline() == 110.0 + defaults.CLOSE_TIMEOUT
    sc.core.handle_timer(110.0 + defaults.CLOSE_TIMEOUT)
    assert sc.take_events() == [AbortTransport()]


def test_a_refused_pipe_answers_one_goaway_and_ignores_its_peer() -> None:
    sc = side(Role.CONSUMER)
    goaway_bytes = sc.core.refuse(Refusal(GoawayCode.LIMIT_EXCEEDED, "too many"))
    assert CodedReason.decode(FrameType.GOAWAY, 0, goaway_bytes[9:]).reason == "too many"
    sc.core.receive(ProviderHandshake(b"k", "sp").start(), 1.0)
    assert sc.sent() == [] and sc.events == [] and sc.core.next_deadline() is None
    assert sc.core.state is State.CLOSING and sc.core.refusal is not None


# --- single frames at an authenticated pipe: (frames in, events and frames out) ---------

OPEN = Open(1, SERVICE, 65536, 4096, "203.0.113.9:1", "198.51.100.1:443")

SP_TABLE: list[tuple[str, bytes, list[PipeEvent], list[Out], State]] = [
    ("open", OPEN.encode(), [OpenRequested(OPEN)], [], State.OPEN),
    (
        "open stream 0",
        Open(0, SERVICE, 65536, 4096, "c").encode(),
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "OPEN reuses stream id 0")],
        State.CLOSING,
    ),
    (
        "open with huge frames",
        Open(3, SERVICE, 65536, MAX_PAYLOAD + 1, "c").encode(),
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, f"OPEN asks for frames of {MAX_PAYLOAD + 1} bytes")],
        State.CLOSING,
    ),
    (
        "ping",
        encode_ping(FrameType.PING, 42),
        [],
        [(FrameType.PONG, 0, (42).to_bytes(8, "big"))],
        State.OPEN,
    ),
    (
        "ping flood",
        encode_ping(FrameType.PING, 1) * (MAX_PINGS_PER_INTERVAL + 1),
        [CloseTransport()],
        [(FrameType.PONG, 0, (1).to_bytes(8, "big"))] * MAX_PINGS_PER_INTERVAL
        + [
            goaway(
                GoawayCode.LIMIT_EXCEEDED,
                f"SC sent more than {MAX_PINGS_PER_INTERVAL} PINGs within 1 s",
            )
        ],
        State.CLOSING,
    ),
    (
        "registered",
        Registered(((SERVICE, RegisterStatus.ACCEPTED),)).encode(),
        [RegisteredReceived(((SERVICE, RegisterStatus.ACCEPTED),))],
        [],
        State.OPEN,
    ),
    (
        "open_ok is the SP's to send",
        encode_frame(FrameType.OPEN_OK, 1),
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "unexpected OPEN_OK from the SC")],
        State.CLOSING,
    ),
    (
        "malformed: unknown frame type",
        b"\x00\x00\x00\x00\x63\x00\x00\x00\x00",
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "unknown frame type 99")],
        State.CLOSING,
    ),
    (
        "malformed: a window update without its body",
        encode_frame(FrameType.WINDOW, 1, b"\x00"),
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "malformed window update")],
        State.CLOSING,
    ),
    ("data for no stream", encode_frame(FrameType.DATA, 9, b"late"), [], [], State.OPEN),
    (
        "peer drains",
        CodedReason(FrameType.GOAWAY, 0, GoawayCode.DRAINING, "restart").encode(),
        [],
        [],
        State.DRAINING,
    ),
    (
        "peer goes away",
        CodedReason(FrameType.GOAWAY, 0, GoawayCode.SHUTDOWN, "bye").encode(),
        [CloseTransport()],
        [],
        State.CLOSING,
    ),
]


@pytest.mark.parametrize(
    ("frames", "events", "out", "state"),
    [row[1:] for row in SP_TABLE],
    ids=[row[0] for row in SP_TABLE],
)
def test_sp_side_frames(
    frames: bytes, events: list[PipeEvent], out: list[Out], state: State
) -> None:
    _, sp = authenticated()
    sp.core.receive(frames, 1.0)
    assert sp.take_events() == events
    sent = sp.sent()
    if out and out[-1][0] is FrameType.GOAWAY and sent and sent[-1][0] is FrameType.GOAWAY:
        # The reason names the problem; its exact wording after that is the decoder's.
        *sent_rest, (_, _, payload) = sent
        *out_rest, (_, _, wanted) = out
        assert sent_rest == out_rest
        got = CodedReason.decode(FrameType.GOAWAY, 0, payload)
        expected = CodedReason.decode(FrameType.GOAWAY, 0, wanted)
        assert got.code == expected.code and expected.reason.split(",")[0] in got.reason
    else:
        assert sent == out
    assert sp.core.state is state


SC_TABLE: list[tuple[str, list[bytes], list[PipeEvent], list[Out]]] = [
    ("register", [Register((SERVICE,)).encode()], [RegisterReceived((SERVICE,))], []),
    (
        "register twice",
        [Register((SERVICE,)).encode()] * 2,
        [RegisterReceived((SERVICE,)), CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "second REGISTER on one pipe")],
    ),
    (
        "open is the SC's to send",
        [OPEN.encode()],
        [CloseTransport()],
        [goaway(GoawayCode.PROTOCOL_ERROR, "unexpected OPEN from the SP")],
    ),
]


@pytest.mark.parametrize(
    ("frames", "events", "out"), [row[1:] for row in SC_TABLE], ids=[row[0] for row in SC_TABLE]
)
def test_sc_side_frames(frames: list[bytes], events: list[PipeEvent], out: list[Out]) -> None:
    sc, _ = authenticated()
    for frame in frames:
        sc.core.receive(frame, 1.0)
    assert sc.take_events() == events
    assert sc.sent() == out


# --- streams ---------------------------------------------------------------------------


def open_stream(sc: Side, sp: Side, window: int = 65536) -> tuple[Stream, Sink, Stream, Sink]:
    client, service = Sink(), Sink()
    sc_stream = sc.core.open_stream(SERVICE, window=window, max_frame=4096, client="c", sink=client)
    pump(sc, sp)
    (event,) = sp.take_events()
    assert isinstance(event, OpenRequested) and event.request.stream_id == sc_stream.id
    sp_stream = sp.core.accept_stream(event.request)
    sp_stream.sink = service
    sp.core.answer_open(sp_stream, None)
    ((ftype, stream_id, payload),) = sp.sent()  # OPEN_OK names the window the SP granted
    assert (ftype, stream_id, decode_open_ok(payload)) == (FrameType.OPEN_OK, sc_stream.id, window)
    sc.core.receive(encode_frame(ftype, stream_id, payload), 1.0)
    assert sc_stream.send_credit == window
    return sc_stream, client, sp_stream, service


def test_stream_ids_are_allocated_in_steps() -> None:
    for step, wanted in ((1, [1, 2, 3]), (4, [1, 5, 9])):
        sc = side(Role.CONSUMER, stream_id_step=step)
        ids = [
            sc.core.open_stream(SERVICE, window=1, max_frame=1, client="c", sink=Sink()).id
            for _ in range(3)
        ]
        assert ids == wanted


def test_a_peer_that_overruns_windows_again_and_again_loses_the_pipe() -> None:
    sc, sp = authenticated()
    streams = [open_stream(sc, sp, window=1000) for _ in range(defaults.LIMIT_VIOLATIONS)]
    for n, (sc_stream, _, _, service) in enumerate(streams, 1):
        # past the window this end granted: the stream is reset, the violation counted
        sp.core.receive(encode_frame(FrameType.DATA, sc_stream.id, bytes(1001)), 2.0)
        assert service.resets and service.data == b""
        assert (state_of(sp) is State.CLOSING) == (n == defaults.LIMIT_VIOLATIONS)
    assert Limit.REPEATED_VIOLATIONS in sp.limits
    assert sp.take_events()[-1] == CloseTransport()
    assert isinstance(sp.core.error, LimitExceeded) and "16 times" in sp.core.close_reason
    assert sp.sent()[-1] == goaway(GoawayCode.LIMIT_EXCEEDED, sp.core.close_reason)


def test_data_flows_within_the_window_and_credit_comes_back() -> None:
    sc, sp = authenticated()
    sc_stream, _, sp_stream, service = open_stream(sc, sp, window=1000)
    sc_stream.send(b"x" * 1000)
    assert sc_stream.send_credit == 0
    with pytest.raises(LocalProtocolError, match="exceed the credit"):
        sc_stream.send(b"y")
    pump(sc, sp)
    assert bytes(service.data) == b"x" * 1000
    sp_stream.consumed(1000)  # the service took it all: credit goes back
    assert bytes(sp.out.buffer) == encode_window(sp_stream.id, 1000)
    pump(sc, sp)
    assert sc_stream.send_credit == 1000


def test_a_peer_that_overruns_the_window_gets_its_stream_reset() -> None:
    sc, sp = authenticated()
    _, _, sp_stream, service = open_stream(sc, sp, window=100)
    sp.core.receive(encode_frame(FrameType.DATA, sp_stream.id, b"z" * 101), 1.0)
    ((ftype, stream_id, payload),) = sp.sent()
    reset = CodedReason.decode(FrameType.RESET, stream_id, payload)
    assert (ftype, stream_id, reset.code) == (FrameType.RESET, sp_stream.id, ResetCode.FLOW_CONTROL)
    assert service.resets and service.resets[0][1] is Outcome.ERROR
    assert sp_stream.id not in sp.core.streams  # forgotten: later frames are dropped


def test_opens_beyond_streams_per_pipe_are_refused_and_counted() -> None:
    sc, sp = authenticated(max_streams=1)
    open_stream(sc, sp)
    refused = sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    sp.core.receive(bytes(sc.out.take()), 1.0)
    assert sp.take_events() == [] and sp.limits == [Limit.STREAMS_PER_PIPE]
    ((ftype, stream_id, payload),) = sp.sent()
    assert (ftype, stream_id) == (FrameType.OPEN_FAIL, refused.id)
    assert "limit of 1 concurrent streams" in CodedReason.decode(ftype, stream_id, payload).reason
    assert sp.core.state is State.OPEN  # the pipe goes on


def test_a_refused_open_is_forgotten() -> None:
    sc, sp = authenticated()
    sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    pump(sc, sp)
    (event,) = sp.take_events()
    assert isinstance(event, OpenRequested)
    stream = sp.core.accept_stream(event.request)
    sp.core.answer_open(stream, OpenRefused(3, "no such service here"))
    assert sp.core.streams == {}
    ((ftype, stream_id, payload),) = sp.sent()
    assert (ftype, stream_id) == (FrameType.OPEN_FAIL, stream.id)
    assert CodedReason.decode(ftype, stream_id, payload).reason == "no such service here"
    sp.core.receive(encode_frame(FrameType.DATA, stream.id, b"late"), 1.0)
    assert sp.core.status().unknown_stream_frames == 1  # dropped, never delivered


# --- heartbeats, drain, close ---------------------------------------------------------------


def test_heartbeats_ping_every_interval_and_silence_aborts_the_pipe() -> None:
    _, sp = authenticated()
    assert sp.core.next_deadline() == 1.0
    sp.core.handle_timer(1.0)
    assert sp.sent() == [(FrameType.PING, 0, (1000).to_bytes(8, "big"))]
    assert sp.core.next_deadline() == 2.0
    sp.core.receive(encode_ping(FrameType.PONG, 1000), 5.0)  # heard at 5
    sp.core.handle_timer(13.0)  # 8 s after: still within the timeout, so another PING
    assert sp.take_events() == [] and sp.core.next_deadline() == 14.0
    sp.core.handle_timer(14.0)
    assert sp.take_events() == [AbortTransport()]
    assert sp.core.close_reason == "heartbeat timeout (9.0 s without a frame)"
    assert sp.core.state is State.CLOSING


def test_drain_then_close_then_the_connection_lost() -> None:
    sc, sp = authenticated()
    _, client, _, _ = open_stream(sc, sp)
    pump(sc, sp)
    sp.core.drain("SP shutting down")
    sp.core.drain("again")  # once is enough
    assert sp.core.state is State.DRAINING
    pump(sc, sp, 2.0)
    assert sc.core.state is State.DRAINING  # no new streams there either
    sp.core.close(GoawayCode.SHUTDOWN, "SP shutting down", 3.0)
    assert sp.take_events() == [CloseTransport()] and state_of(sp) is State.CLOSING
    assert sp.core.next_deadline() == 3.0 + defaults.CLOSE_TIMEOUT
    pump(sc, sp, 3.0)
    assert sc.take_events() == [CloseTransport()]
    assert sc.core.close_reason == "SP closed the pipe: SP shutting down"
    assert sc.core.connection_lost("lost") == "SP closed the pipe: SP shutting down"
    assert state_of(sc) is State.CLOSED and sc.core.streams == {}
    assert client.resets == [
        ("pipe closed: SP closed the pipe: SP shutting down", Outcome.PIPE_CLOSED)
    ]
    assert sc.core.next_deadline() is None


def test_control_frames_for_a_peer_that_does_not_read_are_bounded() -> None:
    sc, _ = authenticated()
    sc.core.pause_writing()
    ping = encode_ping(FrameType.PONG, 1)
    for _ in range(100 // len(ping)):
        sc.core.send_raw(ping)
    assert sc.core.state is State.OPEN
    small = side(Role.CONSUMER, control_backlog=100)
    small.core.pause_writing()
    for _ in range(100 // len(ping) + 1):
        small.core.send_raw(ping)
    assert small.take_events() == [AbortTransport()] and small.limits == [Limit.CONTROL_BACKLOG]
    assert "does not read" in small.core.close_reason
