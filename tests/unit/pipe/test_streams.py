"""StreamTable: the streams of one pipe, their ids, and the stream frames routed to them; frames
for streams it no longer has are dropped (and counted), never handed to another stream."""

from __future__ import annotations

import logging
import uuid

import pytest

from edgerq import defaults
from edgerq.labels import Outcome
from edgerq.pipe.budget import PipeBudget
from edgerq.pipe.stream import OpenAnswer, OpenRefused, PipeLost, Stream
from edgerq.pipe.streams import StreamTable
from edgerq.protocol.messages import Open, OpenFailure, ResetCode
from tests.unit.fakes import Sink, Writer

SERVICE = uuid.UUID(int=7)


class TableWriter(Writer):
    """A pipe as its streams see it, forgetting a finished stream from its table as
    ``PipeConnection.forget_stream`` does."""

    def __init__(self, table: StreamTable) -> None:
        super().__init__()
        self.table = table

    def forget_stream(self, stream: Stream) -> None:
        super().forget_stream(stream)
        self.table.forget(stream)


def new_table(step: int = 1) -> tuple[StreamTable, TableWriter]:
    table = StreamTable("pipe 1", step)
    return table, TableWriter(table)


def outgoing(table: StreamTable, writer: Writer, sink: Sink | None = None) -> Stream:
    return table.outgoing(writer, SERVICE, 65536, 4096, sink or Sink())


# --- ids, outgoing and incoming ---------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "ids"), [(1, [1, 2, 3, 4]), (2, [1, 3, 5, 7]), (4, [1, 5, 9, 13])]
)
def test_the_sc_allocates_stream_ids_from_one_in_steps(step: int, ids: list[int]) -> None:
    table, writer = new_table(step)
    assert [outgoing(table, writer).id for _ in range(4)] == ids


def test_ids_are_never_reused_after_a_stream_is_forgotten() -> None:
    table, writer = new_table()
    first = outgoing(table, writer)
    table.forget(first)
    assert outgoing(table, writer).id == 2


def test_an_outgoing_stream_is_the_scs_ask_bound_to_its_sink_and_budget() -> None:
    table, writer = new_table()
    sink = Sink()
    budget = PipeBudget(limit=1 << 20)
    stream = table.outgoing(writer, SERVICE, 65536, 4096, sink, budget)
    assert (stream.id, stream.service, stream.window) == (1, SERVICE, 65536)
    assert stream.sink is sink and stream.budget is budget and stream.writer is writer
    assert stream.max_frame == defaults.DATA_FRAME  # a small request_buffer, raised
    assert table.streams == {1: stream} and len(table) == 1 and table.total == 1


def test_an_incoming_stream_takes_the_opens_id_and_the_window_this_end_granted() -> None:
    table, writer = new_table()
    request = Open(8, SERVICE, 1 << 20, 128 * 1024, "203.0.113.9:1")
    stream = table.incoming(writer, request, 65536)
    assert (stream.id, stream.service, stream.window) == (8, SERVICE, 65536)
    assert stream.max_frame == 128 * 1024
    assert stream.sink is None  # the owner binds one before data flows
    assert stream.answer is OpenAnswer.NOT_ASKED
    assert table.streams == {8: stream} and table.total == 1


def test_the_total_counts_every_stream_carried_and_len_the_open_ones() -> None:
    table, writer = new_table()
    streams = [outgoing(table, writer) for _ in range(3)]
    table.incoming(writer, Open(10, SERVICE, 100, 100, "c"), 100)
    table.forget(streams[0])
    table.forget(streams[2])
    assert len(table) == 2 and table.total == 4
    assert sorted(table.streams) == [2, 10]


def test_forget_leaves_a_newer_stream_under_the_same_id_alone() -> None:
    table, writer = new_table()
    old = table.incoming(writer, Open(3, SERVICE, 100, 100, "c"), 100)
    table.forget(old)
    new = table.incoming(writer, Open(3, SERVICE, 100, 100, "c"), 100)
    table.forget(old)  # the old one's late forget
    assert table.streams == {3: new}
    table.forget(new)
    table.forget(new)  # twice is harmless
    assert table.streams == {} and table.total == 2


# --- frames routed to streams ---------------------------------------------------------------


def test_window_fin_reset_and_answers_reach_their_own_stream_only() -> None:
    table, writer = new_table()
    sinks = [Sink(), Sink(), Sink(), Sink()]
    streams = [outgoing(table, writer, sink) for sink in sinks]
    streams[3].await_answer()
    table.window(1, 1000)
    table.eof(2)
    table.reset(3, "reset by SP: gone")
    table.open_result(4, OpenRefused(OpenFailure.CONNECT_REFUSED, "refused"))
    assert streams[0].send_credit == 65536 + 1000
    assert sinks[2].resets == [("reset by SP: gone", Outcome.RESET)]
    (answer,) = sinks[3].answers
    assert isinstance(answer, OpenRefused) and answer.reason == "refused"
    assert [len(s.answers) for s in sinks] == [0, 0, 0, 1]
    assert [s.credits for s in sinks] == [1, 0, 0, 0]
    assert [s.eof for s in sinks] == [False, True, False, False]
    assert [len(s.resets) for s in sinks] == [0, 0, 1, 0]
    assert sorted(table.streams) == [1, 2]  # reset and refused streams are forgotten
    assert table.unknown_frames == 0


def test_frames_for_unknown_streams_touch_no_other_stream() -> None:
    table, writer = new_table()
    sink = Sink()
    stream = outgoing(table, writer, sink)
    stream.await_answer()
    table.window(9, 1000)
    table.eof(9)
    table.reset(9, "late")
    table.open_result(9, None, 4096)
    assert stream.send_credit == 65536 and stream.answer is OpenAnswer.AWAITED
    assert (sink.credits, sink.eof, sink.resets, sink.answers) == (0, False, [], [])
    assert table.streams == {1: stream}


def test_a_fin_for_an_unknown_stream_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    table, _ = new_table()
    caplog.set_level(logging.DEBUG, "edgerq.pipe")
    table.eof(9)
    table.eof(9)
    assert table.unknown_frames == 2
    assert [r.getMessage() for r in caplog.records] == [
        "pipe 1: FIN for unknown stream 9 dropped"
    ] * 2


def test_what_a_carrier_or_the_pipe_drops_is_counted_and_logged_at_debug_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    table, _ = new_table()
    caplog.set_level(logging.DEBUG, "edgerq.pipe")
    table.unknown(11, "DATA")
    table.unknown(4, "data on an ended QUIC stream")
    assert table.unknown_frames == 2
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "pipe 1: DATA for unknown stream 11 dropped"),
        (logging.DEBUG, "pipe 1: data on an ended QUIC stream for unknown stream 4 dropped"),
    ]


def test_a_stream_forgotten_then_sent_to_is_unknown() -> None:
    table, writer = new_table()
    sink = Sink()
    stream = outgoing(table, writer, sink)
    stream.reset(ResetCode.CANCELLED, "client left")
    assert writer.forgotten == [1] and table.streams == {}
    table.eof(1)
    assert table.unknown_frames == 1 and not sink.eof


# --- the pipe's state, told to every stream -----------------------------------------------


def test_pipe_paused_is_told_to_every_stream_with_a_local_end() -> None:
    table, writer = new_table()
    sinks = [Sink(), Sink()]
    for sink in sinks:
        outgoing(table, writer, sink)
    table.incoming(writer, Open(10, SERVICE, 100, 100, "c"), 100)  # no sink bound yet
    table.pipe_paused(True)
    table.pipe_paused(False)
    assert [s.paused for s in sinks] == [[True, False], [True, False]]


class ClosingSink(Sink):
    """A local end that gives up on its stream when the pipe pauses."""

    stream: Stream | None = None

    def on_pipe_paused(self, paused: bool) -> None:
        super().on_pipe_paused(paused)
        if self.stream is not None:
            self.stream.reset(ResetCode.CANCELLED, "no room")


def test_a_stream_that_ends_while_told_of_a_pause_does_not_stop_the_others_hearing() -> None:
    table, writer = new_table()
    closing = ClosingSink()
    closing.stream = outgoing(table, writer, closing)
    later = Sink()
    outgoing(table, writer, later)
    table.pipe_paused(True)
    assert closing.paused == [True] and later.paused == [True]
    assert sorted(table.streams) == [2]


def test_reset_all_tells_every_stream_its_pipe_is_lost_and_empties_the_table() -> None:
    table, writer = new_table()
    awaiting, opened = Sink(), Sink()
    first = outgoing(table, writer, awaiting)
    first.await_answer()
    second = outgoing(table, writer, opened)
    second.await_answer()
    second.receive_open_result(None)
    table.incoming(writer, Open(10, SERVICE, 100, 100, "c"), 100)  # no sink: nothing to tell
    table.reset_all("pipe closed: SP closed the pipe: bye")
    (lost,) = awaiting.answers
    assert isinstance(lost, PipeLost)  # another pipe may serve it
    assert lost.reason == "pipe closed: SP closed the pipe: bye"
    assert opened.answers == [None]  # answered before: not answered again
    for sink in (awaiting, opened):
        assert sink.resets == [("pipe closed: SP closed the pipe: bye", Outcome.PIPE_CLOSED)]
    assert table.streams == {} and len(table) == 0 and table.total == 3
    assert first.finished and second.finished
