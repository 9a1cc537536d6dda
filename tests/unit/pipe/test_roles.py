"""The frames only one side of a pipe may receive: ConsumerFrames at the SC (REGISTER and the
answers to OPEN), ProviderFrames at the SP (OPEN and REGISTERED), and the errors a peer's
bad or misplaced frame raises."""

from __future__ import annotations

import logging
import uuid

import pytest

from edgerq.errors import FrameError, RemoteProtocolError
from edgerq.labels import Limit
from edgerq.pipe.bounds import PipeBounds
from edgerq.pipe.events import (
    OpenRequested,
    PipeEvent,
    RegisteredReceived,
    RegisterReceived,
)
from edgerq.pipe.roles import ConsumerFrames, ProviderFrames
from edgerq.pipe.stream import OpenAnswer, OpenRefused, Stream
from edgerq.pipe.streams import StreamTable
from edgerq.protocol.frames import MAX_PAYLOAD, Frame, FrameType
from edgerq.protocol.messages import (
    CodedReason,
    Open,
    OpenFailure,
    Register,
    Registered,
    RegisterStatus,
    encode_open_ok,
)
from tests.unit.fakes import Sink, Writer

SERVICE = uuid.UUID(int=7)
OTHER = uuid.UUID(int=8)


def frame(encoded: bytes) -> Frame:
    """The frame in ``encoded`` (one frame's wire bytes)."""
    length = int.from_bytes(encoded[:4], "big")
    assert len(encoded) == 9 + length
    return Frame(FrameType(encoded[4]), int.from_bytes(encoded[5:9], "big"), encoded[9:])


def open_frame(stream_id: int, *, window: int = 65536, max_frame: int = 4096) -> Frame:
    return frame(Open(stream_id, SERVICE, window, max_frame, "203.0.113.9:1").encode())


# --- at the SC ---------------------------------------------------------------------------


class ConsumerSide:
    def __init__(self) -> None:
        self.writer = Writer()
        self.table = StreamTable("pipe 1")
        self.events: list[PipeEvent] = []
        self.frames = ConsumerFrames(self.table, self.events.append)

    def awaiting(self, window: int = 65536) -> tuple[Stream, Sink]:
        """A stream whose OPEN was sent, awaiting its answer (as ``open_stream`` leaves it)."""
        sink = Sink()
        stream = self.table.outgoing(self.writer, SERVICE, window, 4096, sink)
        stream.await_grant(16 * 1024)
        stream.await_answer()
        return stream, sink


def test_register_offers_the_sps_services_once() -> None:
    sc = ConsumerSide()
    assert not sc.frames.registered
    sc.frames.handle(frame(Register((SERVICE, OTHER)).encode()))
    assert sc.events == [RegisterReceived((SERVICE, OTHER))]
    assert sc.frames.registered


def test_a_second_register_on_one_pipe_is_a_protocol_error() -> None:
    sc = ConsumerSide()
    sc.frames.handle(frame(Register((SERVICE,)).encode()))
    with pytest.raises(RemoteProtocolError, match=r"^second REGISTER on one pipe$"):
        sc.frames.handle(frame(Register((OTHER,)).encode()))
    assert sc.events == [RegisterReceived((SERVICE,))]  # the second is not offered


def test_a_malformed_register_registers_nothing() -> None:
    sc = ConsumerSide()
    broken = Frame(FrameType.REGISTER, 0, b"\x00\x02" + SERVICE.bytes)  # says 2, holds 1
    with pytest.raises(FrameError, match=r"^register length does not match its count$"):
        sc.frames.handle(broken)
    assert sc.events == [] and not sc.frames.registered


def test_open_ok_tells_the_stream_its_answer_and_the_window_the_sp_granted() -> None:
    sc = ConsumerSide()
    stream, sink = sc.awaiting(window=65536)
    sc.frames.handle(frame(encode_open_ok(stream.id, 32768)))
    assert sink.answers == [None] and stream.answer is OpenAnswer.OPENED
    assert stream.window == 32768 and stream.send_credit == 32768  # the smaller of the two
    assert sink.credits == 1


def test_open_ok_from_an_sp_older_than_grants_keeps_the_scs_window() -> None:
    sc = ConsumerSide()
    stream, sink = sc.awaiting(window=65536)
    sc.frames.handle(Frame(FrameType.OPEN_OK, stream.id, b""))
    assert sink.answers == [None]
    assert stream.window == 65536 and stream.send_credit == 65536


def test_open_fail_tells_the_stream_why_and_ends_it() -> None:
    sc = ConsumerSide()
    stream, sink = sc.awaiting()
    failure = CodedReason(FrameType.OPEN_FAIL, stream.id, OpenFailure.CONNECT_REFUSED, "refused")
    sc.frames.handle(frame(failure.encode()))
    (answer,) = sink.answers
    assert isinstance(answer, OpenRefused)
    assert (answer.code, answer.reason) == (OpenFailure.CONNECT_REFUSED, "refused")
    assert stream.finished and stream.answer is OpenAnswer.REFUSED
    assert sc.writer.forgotten == [stream.id]
    assert sink.resets == []  # a refusal is an answer, not a reset


def test_answers_for_streams_the_sc_no_longer_has_are_ignored() -> None:
    sc = ConsumerSide()
    stream, sink = sc.awaiting()
    sc.frames.handle(frame(encode_open_ok(99, 4096)))
    failure = CodedReason(FrameType.OPEN_FAIL, 98, OpenFailure.CONNECT_ERROR, "late")
    sc.frames.handle(frame(failure.encode()))
    assert sink.answers == [] and stream.answer is OpenAnswer.AWAITED
    assert sc.events == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (Frame(FrameType.OPEN_OK, 1, b"\x00\x00\x00\x00"), "^open answer grants a zero window$"),
        (Frame(FrameType.OPEN_OK, 1, b"\x00\x01"), "^malformed open answer$"),
        (Frame(FrameType.OPEN_FAIL, 1, b""), "^OPEN_FAIL without a code$"),
    ],
    ids=["zero grant", "short grant", "no code"],
)
def test_malformed_answers_are_frame_errors(bad: Frame, message: str) -> None:
    sc = ConsumerSide()
    _, sink = sc.awaiting()
    with pytest.raises(FrameError, match=message):
        sc.frames.handle(bad)
    assert sink.answers == []


@pytest.mark.parametrize(
    "misplaced",
    [
        open_frame(1),
        frame(Registered(((SERVICE, RegisterStatus.ACCEPTED),)).encode()),
        Frame(FrameType.HELLO, 0, b""),
    ],
    ids=["OPEN", "REGISTERED", "HELLO"],
)
def test_frames_only_an_sc_sends_are_protocol_errors_from_the_sp(misplaced: Frame) -> None:
    sc = ConsumerSide()
    with pytest.raises(
        RemoteProtocolError, match=rf"^unexpected {misplaced.type.name} from the SP$"
    ):
        sc.frames.handle(misplaced)
    assert sc.events == [] and len(sc.table) == 0


# --- at the SP ---------------------------------------------------------------------------


class ProviderSide:
    """ProviderFrames over a real table, with an Acceptor that records how OPENs were
    answered (as ``PipeConnection`` does: accepted into the table, forgotten if refused)."""

    def __init__(self, max_streams: int = 10) -> None:
        self.writer = Writer()
        self.table = StreamTable("pipe 1")
        self.hits: list[Limit] = []
        self.bounds = PipeBounds(max_streams=max_streams, on_limit=self.hits.append)
        self.events: list[PipeEvent] = []
        self.answers: list[tuple[int, OpenRefused | None]] = []
        self.frames = ProviderFrames(self, self.table, self.bounds, self.events.append)

    def __str__(self) -> str:
        return "pipe 1 'sp1' (127.0.0.1:4433)"

    def accept_stream(self, request: Open) -> Stream:
        return self.table.incoming(self.writer, request, request.window)

    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None:
        self.answers.append((stream.id, failure))
        if failure is not None:
            self.table.forget(stream)

    def accept_all(self) -> None:
        """The owner accepts every OPEN it was told of (the SP's connector does, at once)."""
        for event in self.events:
            if (
                isinstance(event, OpenRequested)
                and event.request.stream_id not in self.table.streams
            ):
                self.accept_stream(event.request)


def test_an_open_is_handed_to_the_owner_as_it_came() -> None:
    sp = ProviderSide()
    sp.frames.handle(open_frame(1, window=1000, max_frame=2048))
    assert sp.events == [OpenRequested(Open(1, SERVICE, 1000, 2048, "203.0.113.9:1"))]
    assert len(sp.table) == 0  # the owner accepts it (or not); the frames only ask
    assert sp.answers == [] and sp.hits == []


def test_an_open_may_ask_for_the_largest_frame_a_pipe_carries() -> None:
    sp = ProviderSide()
    sp.frames.handle(open_frame(1, max_frame=MAX_PAYLOAD))
    (event,) = sp.events
    assert isinstance(event, OpenRequested) and event.request.max_frame == MAX_PAYLOAD


def test_an_open_asking_for_larger_frames_is_a_protocol_error() -> None:
    sp = ProviderSide()
    with pytest.raises(
        RemoteProtocolError, match=rf"^OPEN asks for frames of {MAX_PAYLOAD + 1} bytes$"
    ):
        sp.frames.handle(open_frame(1, max_frame=MAX_PAYLOAD + 1))
    assert sp.events == [] and len(sp.table) == 0


def test_an_open_on_stream_zero_is_a_protocol_error() -> None:
    sp = ProviderSide()
    with pytest.raises(RemoteProtocolError, match=r"^OPEN reuses stream id 0$"):
        sp.frames.handle(open_frame(0))
    assert sp.events == []


def test_an_open_reusing_the_id_of_an_open_stream_is_a_protocol_error() -> None:
    sp = ProviderSide()
    sp.frames.handle(open_frame(5))
    sp.accept_all()
    with pytest.raises(RemoteProtocolError, match=r"^OPEN reuses stream id 5$"):
        sp.frames.handle(open_frame(5))
    assert len(sp.events) == 1 and list(sp.table.streams) == [5]


def test_an_open_with_a_zero_window_is_a_frame_error() -> None:
    sp = ProviderSide()
    with pytest.raises(FrameError, match=r"^open with a zero window or frame size$"):
        sp.frames.handle(open_frame(1, window=0))
    assert sp.events == []


def test_opens_past_streams_per_pipe_are_refused_with_the_reason_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sp = ProviderSide(max_streams=2)
    for stream_id in (1, 3):
        sp.frames.handle(open_frame(stream_id))
        sp.accept_all()
    caplog.set_level(logging.WARNING, "edgerq.pipe")
    sp.frames.handle(open_frame(5))
    sp.frames.handle(open_frame(7))
    assert [e.request.stream_id for e in sp.events if isinstance(e, OpenRequested)] == [1, 3]
    reason = "the SP's pipe carries its limit of 2 concurrent streams"
    assert [(i, f.code, f.reason) for i, f in sp.answers if f is not None] == [
        (5, OpenFailure.CONNECT_ERROR, reason),
        (7, OpenFailure.CONNECT_ERROR, reason),
    ]
    assert list(sp.table.streams) == [1, 3]  # the refused ones are forgotten
    assert sp.hits == [Limit.STREAMS_PER_PIPE] * 2 and sp.bounds.streams_refused == 2
    # One warning for a run of refusals, not one per OPEN.
    assert [r.getMessage() for r in caplog.records] == [
        f"pipe 1 'sp1' (127.0.0.1:4433): {reason}: refusing new streams (only counted from now on)"
    ]


def test_a_stream_that_ends_makes_room_for_the_next_open() -> None:
    sp = ProviderSide(max_streams=1)
    sp.frames.handle(open_frame(1))
    sp.accept_all()
    sp.table.forget(sp.table.streams[1])
    sp.frames.handle(open_frame(3))
    assert [e.request.stream_id for e in sp.events if isinstance(e, OpenRequested)] == [1, 3]
    assert sp.answers == [] and sp.hits == []


def test_registered_tells_the_sp_how_the_sc_took_its_services() -> None:
    sp = ProviderSide()
    assert not sp.frames.registered
    results = ((SERVICE, RegisterStatus.ACCEPTED), (OTHER, RegisterStatus.UNKNOWN_SERVICE))
    sp.frames.handle(frame(Registered(results).encode()))
    assert sp.events == [RegisteredReceived(results)] and sp.frames.registered


def test_a_second_registered_is_an_update_not_an_error() -> None:
    sp = ProviderSide()
    sp.frames.handle(frame(Registered(((SERVICE, RegisterStatus.ACCEPTED),)).encode()))
    sp.frames.handle(frame(Registered(((SERVICE, RegisterStatus.UNKNOWN_SERVICE),)).encode()))
    assert sp.events == [
        RegisteredReceived(((SERVICE, RegisterStatus.ACCEPTED),)),
        RegisteredReceived(((SERVICE, RegisterStatus.UNKNOWN_SERVICE),)),
    ]
    assert sp.frames.registered


BROKEN_REGISTERED = Frame(FrameType.REGISTERED, 0, b"\x00\x01" + SERVICE.bytes + b"\x09")
"""A REGISTERED whose one result has a status this SP does not know (9)."""


def test_a_registered_with_an_unknown_status_is_a_frame_error() -> None:
    sp = ProviderSide()
    with pytest.raises(FrameError, match=r"^unknown registration status 9$"):
        sp.frames.handle(BROKEN_REGISTERED)
    assert sp.events == []


def test_a_malformed_registered_does_not_count_as_registered() -> None:
    sp = ProviderSide()
    with pytest.raises(FrameError):
        sp.frames.handle(BROKEN_REGISTERED)
    assert not sp.frames.registered


@pytest.mark.parametrize(
    "misplaced",
    [
        frame(Register((SERVICE,)).encode()),
        frame(encode_open_ok(1, 4096)),
        frame(CodedReason(FrameType.OPEN_FAIL, 1, OpenFailure.CONNECT_ERROR, "x").encode()),
        Frame(FrameType.CHALLENGE, 0, b""),
    ],
    ids=["REGISTER", "OPEN_OK", "OPEN_FAIL", "CHALLENGE"],
)
def test_frames_only_an_sp_sends_are_protocol_errors_from_the_sc(misplaced: Frame) -> None:
    sp = ProviderSide()
    with pytest.raises(
        RemoteProtocolError, match=rf"^unexpected {misplaced.type.name} from the SC$"
    ):
        sp.frames.handle(misplaced)
    assert sp.events == [] and not sp.frames.registered
