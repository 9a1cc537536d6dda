"""What the SC keeps of a stream until OPEN_OK, so it can open it on another pipe."""

from __future__ import annotations

import time
import uuid
from typing import Any, cast

import pytest

from edgerq.pipe.interface import MuxPipe
from edgerq.pipe.stream import OpenAnswer, OpenRefused, PipeLost, Stream
from edgerq.protocol.messages import OpenFailure, ResetCode
from edgerq.sc.registry import ServiceRegistry
from tests.unit.fakes import Sink

SERVICE = uuid.UUID(int=7)


class RecordingPipe:
    """A StreamWriter that records, and what the registry reads of a pipe."""

    def __init__(self, streams: int = 0) -> None:
        self.data: list[bytes] = []
        self.raw: list[bytes] = []
        self.closing = False
        self.draining = False
        self.last_heard = time.monotonic()
        self.streams = dict.fromkeys(range(streams))

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None:
        self.data.append(bytes(data))

    def send_raw(self, data: bytes) -> None:
        self.raw.append(data)

    def forget_stream(self, stream: Stream) -> None:
        pass

    def log_stream_error(self, stream: Stream, message: str) -> None:
        pass


def new_stream(pipe: RecordingPipe, sink: Sink | None = None) -> Stream:
    return Stream(pipe, 1, SERVICE, window=1 << 20, max_frame=4096, sink=sink)


def test_replay_keeps_every_byte_sent_even_after_the_pipe_died() -> None:
    pipe = RecordingPipe()
    stream = new_stream(pipe)
    stream.replay = bytearray()
    stream.send(b"GET / HTTP/1.1\r\n")
    stream.send(memoryview(b"Host: x\r\n"))
    stream.receive_reset("pipe closed: gone", pipe_lost=True)
    # Read from the client before the SC heard of the loss: kept, not dropped.
    stream.send(b"\r\n")
    assert bytes(stream.replay) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    assert b"".join(pipe.data) == b"GET / HTTP/1.1\r\nHost: x\r\n"


def test_no_replay_kept_unless_asked() -> None:
    stream = new_stream(RecordingPipe())
    stream.send(b"abc")
    stream.receive_reset("reset by SP")
    stream.send(b"def")
    assert stream.replay is None


@pytest.mark.parametrize(("pipe_lost", "kind"), [(True, PipeLost), (False, OpenRefused)])
def test_a_lost_pipe_is_told_apart_from_a_refusal(pipe_lost: bool, kind: type[Exception]) -> None:
    sink = Sink()
    stream = new_stream(RecordingPipe(), sink)
    stream.await_answer()
    stream.receive_reset("why", pipe_lost=pipe_lost)
    assert [type(a) for a in sink.answers] == [kind]
    assert stream.answer is OpenAnswer.REFUSED


def test_registry_choice_skips_excluded_closing_and_draining_pipes() -> None:
    registry = ServiceRegistry()
    busy, idle, closing = RecordingPipe(streams=5), RecordingPipe(streams=1), RecordingPipe()
    draining = RecordingPipe()
    closing.closing = True
    draining.draining = True
    for p in (busy, idle, closing, draining):
        registry.add(SERVICE, cast(MuxPipe, p))
    assert registry.choose(SERVICE) is cast(Any, idle)
    assert registry.choose(SERVICE, exclude={cast(MuxPipe, idle)}) is cast(Any, busy)
    assert registry.choose(SERVICE, exclude={cast(MuxPipe, idle), cast(MuxPipe, busy)}) is None


def test_registry_prefers_pipes_heard_from_lately() -> None:
    registry = ServiceRegistry()
    silent, talking = RecordingPipe(streams=0), RecordingPipe(streams=9)
    silent.last_heard -= 60  # its SP was killed and said nothing (udp)
    for p in (silent, talking):
        registry.add(SERVICE, cast(MuxPipe, p))
    assert registry.choose(SERVICE) is cast(Any, talking)
    # With no other choice the silent one is still used: it may be just slow.
    assert registry.choose(SERVICE, exclude={cast(MuxPipe, talking)}) is cast(Any, silent)


def test_the_answer_is_heard_once_whatever_follows() -> None:
    sink = Sink()
    stream = new_stream(RecordingPipe(), sink)
    stream.await_answer()
    stream.receive_open_result(OpenRefused(OpenFailure.CONNECT_REFUSED, "refused"))
    stream.receive_open_result(None)  # a confused SP: ignored
    stream.receive_reset("late reset")
    assert [a and a.reason for a in sink.answers] == ["refused"]


def test_an_abandoned_open_hears_no_late_answer() -> None:
    sink = Sink()
    stream = new_stream(RecordingPipe(), sink)
    stream.await_answer()
    stream.abandon_open()
    stream.reset(ResetCode.CANCELLED, "request_ttl ran out")
    stream.receive_open_result(None)
    assert sink.answers == [] and stream.answer is OpenAnswer.ABANDONED


def test_our_own_failure_before_the_answer_is_an_answer() -> None:
    sink = Sink()
    stream = new_stream(RecordingPipe(), sink)
    stream.await_answer()
    stream.fail(ResetCode.FLOW_CONTROL, "window exceeded")
    assert [type(a) for a in sink.answers] == [OpenRefused]
    assert [reason for reason, _ in sink.resets] == ["window exceeded"]


def test_the_sps_end_awaits_no_answer() -> None:
    sink = Sink()
    stream = new_stream(RecordingPipe(), sink)
    stream.receive_reset("the SC reset it")
    assert sink.answers == [] and stream.answer is OpenAnswer.NOT_ASKED
