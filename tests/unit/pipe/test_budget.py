"""Each end's own bounds on what a peer can make it hold: the window it grants a
stream and the per-pipe budget (``budget.py``, ``Stream``), without sockets;
then the granted window end to end through the real SC and SP joined in memory."""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from edgerq import defaults
from edgerq.carriers.adapter import CarrierPipe
from edgerq.config import load_provider
from edgerq.config.model import ProviderConfig
from edgerq.errors import ConfigError, FrameError, LimitExceeded
from edgerq.labels import Limit
from edgerq.pipe.budget import PipeBudget, granted_window
from edgerq.pipe.stream import Stream
from edgerq.protocol.frames import FrameDecoder, FrameType
from edgerq.protocol.messages import decode_open_ok, encode_open_ok
from tests.unit.carriers.test_memory import SERVICE, consumer, echo_service, provider, run
from tests.unit.fakes import Sink

KIB = 1024


class Pipe:
    """A stand-in for the pipe: records frames and limit hits."""

    def __init__(self) -> None:
        self.frames: list[tuple[FrameType, int, bytes]] = []
        self.hits: list[Limit] = []
        self.forgotten: list[int] = []

    # StreamWriter
    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None:
        self.frames.append((FrameType.DATA, stream_id, bytes(data)))

    def send_raw(self, data: bytes) -> None:
        decoder = FrameDecoder()
        decoder.feed(data)
        self.frames += [(f.type, f.stream_id, f.payload) for f in decoder.frames()]

    def forget_stream(self, stream: Stream) -> None:
        self.forgotten.append(stream.id)

    def log_stream_error(self, stream: Stream, message: str) -> None:
        pass

    # BudgetOwner
    def limit_hit(self, limit: Limit) -> None:
        self.hits.append(limit)

    def resets(self) -> list[int]:
        return [sid for kind, sid, _ in self.frames if kind is FrameType.RESET]


def sp_stream(
    pipe: Pipe, budget: PipeBudget | None, stream_id: int = 1, asked: int = 0xFFFFFFFF
) -> tuple[Stream, Sink]:
    """A stream the SP accepted for an OPEN asking for ``asked``, its own window 64 KiB."""
    sink = Sink()
    window = granted_window(64 * KIB, asked)
    return Stream(pipe, stream_id, SERVICE, window, 16 * KIB, sink, budget), sink


class TakingSink(Sink):
    """A local end whose socket takes what it is handed at once, but ``keep`` bytes
    (as ``LocalConnection`` does: it calls ``consumed`` from ``on_data``)."""

    def __init__(self, keep: int = 0) -> None:
        super().__init__()
        self.keep = keep
        self.stream: Stream | None = None

    def on_data(self, data: bytes | memoryview) -> None:
        super().on_data(data)
        assert self.stream is not None
        self.stream.consumed(max(0, len(self.data) - self.keep))


def taking_stream(pipe: Pipe, budget: PipeBudget, stream_id: int, keep: int = 0) -> Stream:
    sink = TakingSink(keep)
    stream = Stream(pipe, stream_id, SERVICE, 64 * KIB, 16 * KIB, sink, budget)
    sink.stream = sink.stream or stream
    return stream


def test_the_granted_window_is_never_more_than_this_ends_own() -> None:
    assert granted_window(defaults.STREAM_WINDOW, 0xFFFFFFFF) == defaults.STREAM_WINDOW
    assert granted_window(defaults.STREAM_WINDOW, 64 * KIB) == 64 * KIB


def test_data_past_the_window_this_end_granted_resets_the_stream_whatever_was_asked() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=10 * 1024 * KIB)
    stream, sink = sp_stream(pipe, budget)
    stream.receive_data(bytes(64 * KIB))  # exactly the window: fine
    assert sink.reset is None and len(sink.data) == 64 * KIB
    stream.receive_data(b"x")
    assert sink.reset is not None and "window" in sink.reset[0]
    assert pipe.resets() == [1]
    assert pipe.hits == [Limit.STREAM_WINDOW]
    assert budget.held == 0, "a reset stream gives back what it held"
    assert budget.violations == 1, "counted; one violation does not end the pipe (no raise)"


def test_credit_granted_back_lets_the_peer_send_on() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=1024 * KIB)
    stream, sink = sp_stream(pipe, budget)
    for _ in range(20):  # 20 windows' worth, each taken by the socket before the next
        stream.receive_data(bytes(64 * KIB))
        stream.consumed(len(sink.data))
    assert sink.reset is None and len(sink.data) == 20 * 64 * KIB
    assert budget.held == 0 and budget.peak == 64 * KIB


def test_the_pipe_budget_resets_the_stream_that_would_pass_it() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=100 * KIB)
    a, sink_a = sp_stream(pipe, budget, 1)
    b, sink_b = sp_stream(pipe, budget, 3)
    a.receive_data(bytes(60 * KIB))
    b.receive_data(bytes(40 * KIB))  # exactly the budget
    assert budget.held == 100 * KIB and sink_b.reset is None
    b.receive_data(b"x")  # within b's window, past the pipe's budget
    assert sink_b.reset is not None and "budget" in sink_b.reset[0]
    assert sink_a.reset is None
    assert pipe.hits == [Limit.PIPE_BUFFER]
    assert budget.held == 60 * KIB, "b's bytes were given back"
    a.consumed(60 * KIB)  # the socket took a's bytes: room again
    c, sink_c = sp_stream(pipe, budget, 5)
    c.receive_data(bytes(64 * KIB))
    assert sink_c.reset is None and budget.held == 64 * KIB


def test_bytes_a_socket_takes_at_once_are_never_held_nor_charged() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=100 * KIB)
    a, _ = sp_stream(pipe, budget, 1)
    b, _ = sp_stream(pipe, budget, 3)
    a.receive_data(bytes(60 * KIB))
    b.receive_data(bytes(40 * KIB))  # the budget is full: held by a's and b's sockets
    c = taking_stream(pipe, budget, 5)
    for _ in range(10):
        c.receive_data(bytes(64 * KIB))
    assert isinstance(c.sink, TakingSink) and len(c.sink.data) == 640 * KIB
    assert c.sink.reset is None and pipe.hits == []
    assert budget.held == budget.peak == 100 * KIB, "c never held a byte"


def test_what_a_socket_keeps_is_charged_and_past_the_budget_its_stream_is_reset() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=100 * KIB)
    a, _ = sp_stream(pipe, budget, 1)
    a.receive_data(bytes(60 * KIB))
    c = taking_stream(pipe, budget, 3, keep=30 * KIB)
    c.receive_data(bytes(50 * KIB))  # its socket keeps 30 KiB of them
    assert budget.held == 90 * KIB and c.charged == 30 * KIB
    c.consumed(45 * KIB)  # it drained 25 KiB: given back
    assert budget.held == 65 * KIB and c.charged == 5 * KIB
    c.receive_data(bytes(40 * KIB))  # keeps 30 KiB again: 5 KiB + 25 KiB more, fits
    assert budget.held == 90 * KIB and c.charged == 30 * KIB
    assert isinstance(c.sink, TakingSink)
    c.sink.keep = 1 << 30  # its socket stops taking: 12 KiB more are past the budget
    c.receive_data(bytes(12 * KIB))
    assert c.sink.reset is not None and "budget" in c.sink.reset[0]
    assert pipe.hits == [Limit.PIPE_BUFFER] and pipe.resets() == [3]
    assert budget.held == 60 * KIB, "c gave back all it had charged; a's bytes stay"


def test_a_peer_that_keeps_breaking_the_bounds_loses_the_pipe() -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=1024 * KIB, max_violations=3)
    for n in range(2):
        stream, _ = sp_stream(pipe, budget, 2 * n + 1)
        stream.receive_data(bytes(64 * KIB + 1))  # reset, counted, the pipe goes on
    stream, _ = sp_stream(pipe, budget, 5)
    with pytest.raises(LimitExceeded) as failure:  # to the pipe's receive: it closes
        stream.receive_data(bytes(64 * KIB + 1))
    assert failure.value.limit is Limit.REPEATED_VIOLATIONS
    assert "3 times" in str(failure.value)
    assert pipe.resets() == [1, 3, 5], "every overrunning stream was reset"
    stream, _ = sp_stream(pipe, budget, 99)  # frames already on their way: no second end
    stream.receive_data(bytes(64 * KIB + 1))
    assert budget.violations == 4


def test_the_first_violation_is_logged_and_a_flood_is_not(caplog: pytest.LogCaptureFixture) -> None:
    pipe = Pipe()
    budget = PipeBudget(pipe, limit=1024 * KIB, max_violations=100)
    caplog.set_level("INFO", logger="edgerq.budget")
    for n in range(50):
        stream, _ = sp_stream(pipe, budget, 2 * n + 1)
        stream.receive_data(bytes(64 * KIB + 1))
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "overran the window of 65536 B" in warnings[0].getMessage()
    assert len(pipe.hits) == 50


def test_a_budget_must_hold_something() -> None:
    with pytest.raises(ValueError):
        PipeBudget(limit=0)


def test_the_sc_sends_little_until_open_ok_names_the_grant() -> None:
    pipe = Pipe()
    sink = Sink()
    stream = Stream(pipe, 1, SERVICE, 4096 * KIB, 16 * KIB, sink)
    stream.await_answer()
    stream.await_grant(defaults.MIN_STREAM_WINDOW)
    assert stream.send_credit == defaults.MIN_STREAM_WINDOW
    stream.send(bytes(10 * KIB))
    stream.receive_open_result(None, 1024 * KIB)  # the SP granted 1 MiB of our 4 MiB
    assert stream.send_credit == 1024 * KIB - 10 * KIB
    assert stream.window == 1024 * KIB, "and credits the SP back by that measure"
    assert sink.answers == [None], "the sink heard OPEN_OK once"


def test_an_older_sp_without_a_grant_leaves_the_whole_window() -> None:
    stream = Stream(Pipe(), 1, SERVICE, 256 * KIB, 16 * KIB, Sink())
    stream.await_answer()
    stream.await_grant(defaults.MIN_STREAM_WINDOW)
    stream.receive_open_result(None, None)
    assert stream.send_credit == 256 * KIB


def test_a_replay_after_failover_may_use_the_withheld_credit() -> None:
    stream = Stream(Pipe(), 1, SERVICE, 256 * KIB, 16 * KIB, Sink())
    stream.await_grant(defaults.MIN_STREAM_WINDOW)
    stream.send(bytes(40 * KIB))  # more than the first 16 KiB: what the lost stream sent
    assert stream.send_credit == 0 and stream.withheld == 256 * KIB - 40 * KIB


def test_open_ok_carries_the_granted_window() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode_open_ok(7, 1024 * KIB))
    (frame,) = decoder.frames()
    assert (frame.type, frame.stream_id) == (FrameType.OPEN_OK, 7)
    assert decode_open_ok(frame.payload) == 1024 * KIB
    assert decode_open_ok(b"") is None  # an older SP
    with pytest.raises(FrameError):
        decode_open_ok(b"\x00\x01")
    with pytest.raises(FrameError):
        decode_open_ok(bytes(4))


@run
async def test_an_sc_window_larger_than_the_sps_is_cut_to_the_sps_and_bytes_arrive_intact() -> None:
    backend = await echo_service()
    sc = consumer()
    big = replace(sc.config.services[0], stream_window=4096 * KIB)
    sc = type(sc)(replace(sc.config, services=(big,)))
    await sc.start()
    sp = provider(sc, backend.sockets[0].getsockname()[1])
    small = replace(sp.config.pipes[0], stream_window=256 * KIB)
    sp = type(sp)(replace(sp.config, pipes=(small,)))
    await sp.start()
    try:
        await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        reader, writer = await asyncio.open_connection(*sc.service_addresses[SERVICE])
        data = os.urandom(3 * 1024 * KIB)
        writer.write(data)  # at once: more than the SP grants, less than the SC asks
        echoed = await asyncio.wait_for(reader.readexactly(len(data)), 30)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(data).digest()
        pipe = sp.pipes[0].pipe
        assert pipe is not None
        (stream,) = pipe.streams.values()
        assert stream.window == 256 * KIB
        assert isinstance(pipe, CarrierPipe)
        assert pipe.status().limit_violations == 0
        writer.close()
    finally:
        await sp.stop()
        await sc.stop()
        backend.close()


SP_XML = (
    "<service_provider>{root}<limits>{limits}</limits><pipes>"
    "<pipe><name>a</name><hostname>h</hostname><port>1</port>{pipe}<services><service>"
    "<uuid>11111111-2222-3333-4444-555555555555</uuid><hostname>s</hostname><port>2</port>"
    "</service></services></pipe>"
    "<pipe><name>b</name><hostname>h</hostname><port>1</port><services><service>"
    "<uuid>11111111-2222-3333-4444-555555555555</uuid><hostname>s</hostname><port>2</port>"
    "</service></services></pipe>"
    "</pipes></service_provider>"
)


def sp_config(tmp_path: Path, root: str = "", limits: str = "", pipe: str = "") -> ProviderConfig:
    path = tmp_path / "provider.xml"
    path.write_text(SP_XML.format(root=root, limits=limits, pipe=pipe))
    return load_provider(path, env={})


def test_the_sp_has_a_stream_window_of_its_own_and_a_pipe_buffer(tmp_path: Path) -> None:
    config = sp_config(tmp_path)
    assert [p.stream_window for p in config.pipes] == [defaults.STREAM_WINDOW] * 2
    assert config.limits.pipe_buffer == defaults.PIPE_BUFFER
    config = sp_config(
        tmp_path,
        root="<stream_window>262144</stream_window>",
        limits="<pipe_buffer>16777216</pipe_buffer>",
        pipe="<stream_window>65536</stream_window>",
    )
    assert [p.stream_window for p in config.pipes] == [65536, 262144]
    assert config.limits.pipe_buffer == 16 * 1024 * 1024


@pytest.mark.parametrize(
    ("root", "limits"),
    [
        ("<stream_window>1024</stream_window>", ""),  # below 16 KiB
        ("", "<pipe_buffer>1000</pipe_buffer>"),  # below 1 MiB
    ],
)
def test_bounds_too_small_to_work_are_refused(tmp_path: Path, root: str, limits: str) -> None:
    with pytest.raises(ConfigError, match=r"provider\.xml:1"):
        sp_config(tmp_path, root=root, limits=limits)
