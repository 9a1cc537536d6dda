"""PipeBounds: streams_per_pipe, PINGs per heartbeat interval and the control backlog, alone
and as the pipe that asks them (``PipeConnection``) turns their answers into refusals and
closes."""

from __future__ import annotations

import uuid

import pytest

from edgerq import defaults
from edgerq.errors import LimitExceeded
from edgerq.labels import Limit
from edgerq.pipe.bounds import MAX_PINGS_PER_INTERVAL, PipeBounds
from edgerq.pipe.events import (
    AbortTransport,
    CloseTransport,
    OpenRequested,
    PipeEvent,
    Role,
    State,
)
from edgerq.protocol.frames import FrameType
from edgerq.protocol.messages import CodedReason, GoawayCode, encode_ping
from tests.unit.fakes import Sink
from tests.unit.pipe.test_connection import pair, pump, side

SERVICE = uuid.UUID(int=7)


def bounds(**kwargs: int) -> tuple[PipeBounds, list[Limit]]:
    hits: list[Limit] = []
    return PipeBounds(on_limit=hits.append, **kwargs), hits


def test_the_defaults_are_the_configs() -> None:
    plain = PipeBounds()
    assert plain.max_streams == defaults.STREAMS_PER_PIPE
    assert plain.control_backlog == defaults.CONTROL_BACKLOG
    assert plain.streams_refused == 0
    # Without an on_limit, a hit is refused all the same (and counted here).
    assert plain.stream_refused(defaults.STREAMS_PER_PIPE) is not None
    assert plain.streams_refused == 1


# --- streams_per_pipe ----------------------------------------------------------------


def test_streams_fit_until_the_limit_then_each_one_more_is_refused_and_counted() -> None:
    limits, hits = bounds(max_streams=2)
    assert limits.stream_refused(0) is None
    assert limits.stream_refused(1) is None
    assert hits == [] and limits.streams_refused == 0
    reason = "the SP's pipe carries its limit of 2 concurrent streams"
    assert limits.stream_refused(2) == reason
    assert limits.stream_refused(5) == reason
    assert limits.streams_refused == 2
    assert hits == [Limit.STREAMS_PER_PIPE, Limit.STREAMS_PER_PIPE]


def test_a_new_stream_limit_applies_to_the_next_stream() -> None:
    limits, hits = bounds(max_streams=1)
    assert limits.stream_refused(1) is not None
    limits.max_streams = 3  # what set_limits does on a reload
    assert limits.stream_refused(1) is None and limits.stream_refused(2) is None
    assert limits.stream_refused(3) == "the SP's pipe carries its limit of 3 concurrent streams"
    assert limits.streams_refused == 2 and len(hits) == 2


# --- PINGs per interval ----------------------------------------------------------------


def test_pings_up_to_the_bound_are_answered_and_the_next_one_raises() -> None:
    limits, hits = bounds()
    for _ in range(MAX_PINGS_PER_INTERVAL):
        limits.ping("SC", 1.0)
    with pytest.raises(LimitExceeded) as raised:
        limits.ping("SC", 1.0)
    assert str(raised.value) == f"SC sent more than {MAX_PINGS_PER_INTERVAL} PINGs within 1 s"
    assert raised.value.limit is Limit.PINGS
    assert hits == []  # counted once, by the pipe that closes for it (protocol_failure)


@pytest.mark.parametrize(("interval", "said"), [(0.5, "0.5 s"), (10.0, "10 s"), (2.25, "2.25 s")])
def test_the_error_names_the_peer_and_the_interval(interval: float, said: str) -> None:
    limits, _ = bounds()
    for _ in range(MAX_PINGS_PER_INTERVAL):
        limits.ping("SP", interval)
    with pytest.raises(LimitExceeded, match=f"^SP sent more than 32 PINGs within {said}$"):
        limits.ping("SP", interval)


def test_a_new_interval_allows_as_many_pings_again() -> None:
    limits, _ = bounds()
    for _ in range(3):
        for _ in range(MAX_PINGS_PER_INTERVAL):
            limits.ping("SC", 1.0)
        limits.new_interval()
    for _ in range(MAX_PINGS_PER_INTERVAL):
        limits.ping("SC", 1.0)
    with pytest.raises(LimitExceeded):
        limits.ping("SC", 1.0)


# --- the control backlog -----------------------------------------------------------------


def test_control_frames_queued_while_paused_add_up_until_past_the_backlog() -> None:
    limits, hits = bounds(control_backlog=100)
    assert limits.queue_paused(60) is None
    assert limits.queue_paused(40) is None  # exactly the backlog: still held
    assert limits.queue_paused(1) == 101
    assert limits.queue_paused(10) == 111
    assert hits == []  # what is over is the caller's to judge (backlog_exceeded)


def test_resuming_starts_the_count_again() -> None:
    limits, _ = bounds(control_backlog=100)
    assert limits.queue_paused(90) is None
    limits.resumed()
    assert limits.queue_paused(90) is None
    assert limits.queue_paused(11) == 101


def test_a_backlog_within_the_bound_is_no_error() -> None:
    limits, hits = bounds(control_backlog=100)
    assert limits.backlog_exceeded("SP", 0) is None
    assert limits.backlog_exceeded("SP", 100) is None
    assert hits == []


def test_a_backlog_past_the_bound_is_the_error_that_closes_the_pipe_counted_once() -> None:
    limits, hits = bounds(control_backlog=100)
    error = limits.backlog_exceeded("SP", 101)
    assert isinstance(error, LimitExceeded)
    assert str(error) == "SP does not read: 101 bytes of control frames queued (limit 100)"
    assert error.limit is Limit.CONTROL_BACKLOG
    assert hits == [Limit.CONTROL_BACKLOG]


# --- through the pipe that asks them ------------------------------------------------------


def test_the_pipe_refuses_an_open_past_its_max_streams_and_goes_on() -> None:
    sc, sp = pair(max_streams=1)
    sp.take_events()
    sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    pump(sc, sp)
    (first,) = sp.take_events()
    assert isinstance(first, OpenRequested)
    sp.core.accept_stream(first.request)  # as the owner does, before the next frame
    refused = sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    sp.core.receive(bytes(sc.out.take()), 1.0)
    assert sp.take_events() == []  # not asked of the owner
    assert sp.limits == [Limit.STREAMS_PER_PIPE]
    ((ftype, stream_id, payload),) = sp.sent()
    assert (ftype, stream_id) == (FrameType.OPEN_FAIL, refused.id)
    refusal = CodedReason.decode(ftype, stream_id, payload)
    assert refusal.reason == "the SP's pipe carries its limit of 1 concurrent streams"
    assert sp.core.state is State.OPEN and list(sp.core.streams) == [first.request.stream_id]


def test_a_raised_stream_limit_takes_the_next_open() -> None:
    sc, sp = pair(max_streams=1)
    sp.take_events()

    def open_one() -> list[PipeEvent]:
        sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
        sp.core.receive(bytes(sc.out.take()), 1.0)
        return sp.take_events()

    (first,) = open_one()
    assert isinstance(first, OpenRequested)
    sp.core.accept_stream(first.request)
    assert open_one() == [] and sp.limits == [Limit.STREAMS_PER_PIPE]  # stream 2 refused
    sp.core.set_limits(
        max_streams=2, control_backlog=defaults.CONTROL_BACKLOG, pipe_buffer=defaults.PIPE_BUFFER
    )
    (third,) = open_one()
    assert isinstance(third, OpenRequested) and third.request.stream_id == 3
    assert sp.limits == [Limit.STREAMS_PER_PIPE]


def test_the_ping_bound_starts_over_with_each_heartbeat_interval() -> None:
    sc, sp = pair()
    sc.take_events(), sp.take_events()
    ping = encode_ping(FrameType.PING, 1)
    sp.core.receive(ping * MAX_PINGS_PER_INTERVAL, 0.5)
    sp.core.handle_timer(defaults.HEARTBEAT_INTERVAL)  # a new interval: our own PING goes out
    sp.core.receive(ping * MAX_PINGS_PER_INTERVAL, 1.5)
    assert sp.core.state is State.OPEN and sp.take_events() == []
    pongs = [f for f in sp.sent() if f[0] is FrameType.PONG]
    assert len(pongs) == 2 * MAX_PINGS_PER_INTERVAL
    sp.core.receive(ping, 1.6)  # one too many within this interval
    assert sp.take_events() == [CloseTransport()]
    assert sp.limits == [Limit.PINGS]
    reason = f"SC sent more than {MAX_PINGS_PER_INTERVAL} PINGs within 1 s"
    assert sp.core.close_reason == reason
    ((ftype, _, payload),) = sp.sent()  # no PONG for it: the GOAWAY alone
    goaway = CodedReason.decode(ftype, 0, payload)
    assert (ftype, goaway.code, goaway.reason) == (
        FrameType.GOAWAY,
        GoawayCode.LIMIT_EXCEEDED,
        reason,
    )


def test_a_pipe_that_resumes_writing_may_queue_a_whole_backlog_again() -> None:
    sc = side(Role.CONSUMER, control_backlog=100)
    pong = encode_ping(FrameType.PONG, 1)  # 17 bytes
    for _ in range(2):
        sc.core.pause_writing()
        for _ in range(100 // len(pong)):
            sc.core.send_raw(pong)
        sc.core.resume_writing()
    assert sc.take_events() == [] and sc.limits == [] and sc.core.state is State.HANDSHAKE
    sc.core.pause_writing()
    for _ in range(100 // len(pong) + 1):
        sc.core.send_raw(pong)
    assert sc.take_events() == [AbortTransport()] and sc.limits == [Limit.CONTROL_BACKLOG]
    assert sc.core.close_reason == (
        "SP does not read: 102 bytes of control frames queued (limit 100)"
    )


def test_the_backlog_bound_does_not_hold_back_a_pipe_that_is_writing() -> None:
    sc = side(Role.CONSUMER, control_backlog=10)
    for _ in range(20):
        sc.core.send_raw(encode_ping(FrameType.PONG, 1))  # not paused: not bounded
    assert sc.take_events() == [] and sc.limits == []
    assert len(sc.sent()) == 20
