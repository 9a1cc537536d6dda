"""PipeStatus, as ``PipeConnection.status()`` gives it to ``/status`` and the close log line:
one pipe at one moment, its counters moving as streams come and go and stray frames are
dropped, and the bounds in force after a reload."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from edgerq import defaults
from edgerq.pipe.events import OpenRequested, Role, State
from edgerq.pipe.status import PipeStatus
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.frames import FrameType, encode_frame
from edgerq.protocol.messages import GoawayCode, OpenFailure, ResetCode
from tests.unit.fakes import Sink
from tests.unit.pipe.test_connection import Side, pair, pump, side

SERVICE = uuid.UUID(int=7)


def open_streams(sc: Side, sp: Side, n: int, window: int = 65536) -> list[tuple[Stream, Stream]]:
    """``n`` streams the SC opened and the SP accepted and answered OPEN_OK, pumped through."""
    sc_streams = [
        sc.core.open_stream(SERVICE, window=window, max_frame=4096, client="c", sink=Sink())
        for _ in range(n)
    ]
    pump(sc, sp)
    requests = [e.request for e in sp.take_events() if isinstance(e, OpenRequested)]
    sp_streams = []
    for request in requests:
        stream = sp.core.accept_stream(request)
        stream.sink = Sink()
        sp.core.answer_open(stream, None)
        sp_streams.append(stream)
    pump(sc, sp)
    assert [s.id for s in sc_streams] == [s.id for s in sp_streams]
    return list(zip(sc_streams, sp_streams, strict=True))


def test_a_new_pipe_shows_its_settings_and_nothing_carried_yet() -> None:
    sp = side(Role.PROVIDER, max_streams=5, control_backlog=1000, pipe_buffer=1 << 20)
    assert sp.core.status() == PipeStatus(
        id=0,
        name="sp1",
        peer="?",
        state=State.HANDSHAKE,
        opened_at=0.0,
        last_heard=0.0,
        streams_open=0,
        streams_total=0,
        unknown_stream_frames=0,
        max_streams=5,
        control_backlog=1000,
        pipe_buffer=1 << 20,
        held=0,
        limit_violations=0,
    )


def test_an_authenticated_pipe_shows_its_number_the_sps_name_its_peer_and_when_heard() -> None:
    sc, sp = pair()
    sc.core.learn_peer("198.51.100.7:40000")
    sc.core.receive(encode_frame(FrameType.PONG, 0, bytes(8)), 12.5)
    status = sc.core.status()
    assert status.id == sc.core.id and status.id > 0 and status.id != sp.core.status().id
    assert (status.name, status.peer, status.state) == ("sp1", "198.51.100.7:40000", State.OPEN)
    assert (status.opened_at, status.last_heard) == (0.0, 12.5)
    assert (status.max_streams, status.control_backlog, status.pipe_buffer) == (
        defaults.STREAMS_PER_PIPE,
        defaults.CONTROL_BACKLOG,
        defaults.PIPE_BUFFER,
    )


def test_streams_open_and_total_move_as_streams_open_and_close() -> None:
    sc, sp = pair()
    streams = open_streams(sc, sp, 3)
    for end in (sc, sp):
        status = end.core.status()
        assert (status.streams_open, status.streams_total) == (3, 3)
    sc_first, sp_first = streams[0]
    sc_first.send_eof()
    sp_first.send_eof()
    pump(sc, sp)
    _, sp_second = streams[1]
    sp_second.reset(ResetCode.CANCELLED, "service went away")
    pump(sc, sp)
    for end in (sc, sp):
        status = end.core.status()
        assert (status.streams_open, status.streams_total) == (1, 3)
    open_streams(sc, sp, 1)
    assert (sc.core.status().streams_open, sc.core.status().streams_total) == (2, 4)


def test_a_refused_open_counts_in_the_total_but_not_as_open() -> None:
    sc, sp = pair()
    sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    pump(sc, sp)
    (event,) = [e for e in sp.take_events() if isinstance(e, OpenRequested)]
    stream = sp.core.accept_stream(event.request)
    sp.core.answer_open(stream, OpenRefused(OpenFailure.UNKNOWN_SERVICE, "no such service"))
    pump(sc, sp)
    for end in (sc, sp):
        status = end.core.status()
        assert (status.streams_open, status.streams_total) == (0, 1)


def test_opens_refused_past_max_streams_count_in_the_total_too() -> None:
    sc, sp = pair(max_streams=1)
    open_streams(sc, sp, 1)
    sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    pump(sc, sp)
    status = sp.core.status()
    assert (status.streams_open, status.streams_total) == (1, 2)
    assert sc.core.status().streams_open == 1  # the SC forgot the refused one too


def test_frames_for_streams_the_pipe_does_not_have_are_dropped_and_counted() -> None:
    sc, sp = pair()
    ((sc_stream, sp_stream),) = open_streams(sc, sp, 1)
    sp.core.receive(encode_frame(FrameType.DATA, 99, b"stray"), 1.0)
    sp.core.receive(encode_frame(FrameType.FIN, 99), 1.0)
    assert sp.core.status().unknown_stream_frames == 2
    sp_stream.reset(ResetCode.CANCELLED, "done here")  # forgotten at the SP at once
    sp.out.take()  # the RESET never reaches the SC: it goes on sending
    sc_stream.send(b"late")
    pump(sc, sp)
    assert sp.core.status().unknown_stream_frames == 3
    assert sp.core.status().streams_open == 0 and sp.core.state is State.OPEN


def test_frames_a_carrier_dropped_are_counted_with_the_rest() -> None:
    sc, _ = pair()
    sc.core.dropped_frame(4, "data on an ended QUIC stream")
    sc.core.receive(encode_frame(FrameType.DATA, 8, b"x"), 1.0)
    assert sc.core.status().unknown_stream_frames == 2


def test_held_shows_what_the_local_sockets_have_not_taken_yet() -> None:
    sc, sp = pair()
    ((sc_stream, sp_stream),) = open_streams(sc, sp, 1)
    sc_stream.send(b"x" * 3000)
    pump(sc, sp)
    assert sp.core.status().held == 3000  # the service's socket took none of it
    sp_stream.consumed(1000)
    assert sp.core.status().held == 2000
    sp_stream.consumed(3000)
    assert sp.core.status().held == 0


def test_limit_violations_count_the_streams_reset_for_overrunning_their_window() -> None:
    sc, sp = pair()
    streams = open_streams(sc, sp, 2, window=1000)
    for n, (_, sp_stream) in enumerate(streams, 1):
        sp.core.receive(encode_frame(FrameType.DATA, sp_stream.id, bytes(1001)), 1.0)
        status = sp.core.status()
        assert (status.limit_violations, status.streams_open) == (n, 2 - n)
    assert sp.core.status().held == 0  # a reset stream holds nothing


def test_set_limits_shows_in_the_status_and_is_the_bound_in_force() -> None:
    sc, sp = pair()
    ((sc_stream, _),) = open_streams(sc, sp, 1)
    sp.core.set_limits(max_streams=1, control_backlog=2048, pipe_buffer=100)
    status = sp.core.status()
    assert (status.max_streams, status.control_backlog, status.pipe_buffer) == (1, 2048, 100)
    assert status.streams_open == 1  # the stream already open goes on
    sc.core.open_stream(SERVICE, window=65536, max_frame=4096, client="c", sink=Sink())
    pump(sc, sp)
    assert sp.take_events() == [] and sp.core.status().streams_open == 1  # refused
    sc_stream.send(b"y" * 101)  # more than the new pipe_buffer: that stream is reset
    pump(sc, sp)
    status = sp.core.status()
    assert (status.streams_open, status.limit_violations, status.held) == (0, 1, 0)


def test_the_state_follows_drain_close_and_the_connection_lost() -> None:
    sc, sp = pair()
    open_streams(sc, sp, 2)
    sp.core.drain("restart")
    assert sp.core.status().state is State.DRAINING
    sp.core.close(GoawayCode.SHUTDOWN, "restart", 2.0)
    assert sp.core.status().state is State.CLOSING
    pump(sc, sp, 2.0)
    assert sc.core.status().state is State.CLOSING
    sc.core.connection_lost("gone")
    status = sc.core.status()
    assert (status.state, status.streams_open, status.streams_total) == (State.CLOSED, 0, 2)


def test_a_status_is_a_snapshot_that_later_changes_leave_alone() -> None:
    sc, sp = pair()
    before = sc.core.status()
    open_streams(sc, sp, 1)
    assert (before.streams_open, before.streams_total) == (0, 0)
    assert sc.core.status().streams_open == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.streams_open = 1  # type: ignore[misc]
