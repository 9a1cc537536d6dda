"""Limits against abuse: the auth-failure policy, the SC's pipe gate, the per-pipe bounds,
and how they are configured."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from edgerq.carriers.tcp import TcpPipe
from edgerq.config import load_consumer, load_provider
from edgerq.config.model import PipeLimits
from edgerq.errors import AuthError, ConfigError
from edgerq.labels import Limit, Outcome
from edgerq.pipe.interface import MAX_PINGS_PER_INTERVAL, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import FrameDecoder, FrameType, encode_frame
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake
from edgerq.protocol.messages import CodedReason, GoawayCode, Open, encode_ping
from edgerq.runtime.metrics import Metrics
from edgerq.sc.gate import AuthFailureLimiter, PipeGate, source_address
from tests.unit.fakes import Owner

# --- AuthFailureLimiter: the pure policy ---------------------------------------------


def test_a_source_is_blocked_after_max_failures_within_the_window() -> None:
    limiter = AuthFailureLimiter(max_failures=3, window=60, block=300)
    assert not limiter.failure("10.0.0.1", 0)
    assert not limiter.failure("10.0.0.1", 10)
    assert limiter.blocked_until("10.0.0.1", 11) is None
    assert limiter.failure("10.0.0.1", 20)  # the third: the block starts, reported once
    assert limiter.blocked_until("10.0.0.1", 21) == 320
    assert limiter.blocked_until("10.0.0.2", 21) is None  # other sources are unaffected
    assert limiter.blocked_count(21) == 1


def test_failures_older_than_the_window_do_not_count() -> None:
    limiter = AuthFailureLimiter(max_failures=3, window=60, block=300)
    limiter.failure("a", 0)
    limiter.failure("a", 30)
    assert not limiter.failure("a", 61)  # the one at 0 has left the window
    assert limiter.blocked_until("a", 62) is None
    assert limiter.failure("a", 62)


def test_the_block_ends_after_its_time_with_a_clean_slate() -> None:
    limiter = AuthFailureLimiter(max_failures=2, window=60, block=100)
    limiter.failure("a", 0)
    assert limiter.failure("a", 1)
    assert limiter.blocked_until("a", 100) == 101
    assert limiter.blocked_until("a", 101) is None
    assert len(limiter) == 0  # forgotten once the block is over
    assert not limiter.failure("a", 102)  # one failure again is not a block


def test_failures_while_blocked_do_not_start_another_block() -> None:
    limiter = AuthFailureLimiter(max_failures=1, window=60, block=100)
    assert limiter.failure("a", 0)
    assert not limiter.failure("a", 5)  # a handshake that began before the block
    assert limiter.blocked_until("a", 50) == 100  # not extended


def test_memory_is_bounded_by_max_sources_oldest_forgotten_first() -> None:
    limiter = AuthFailureLimiter(max_failures=2, window=60, block=100, max_sources=3)
    for n in range(1000):
        limiter.failure(f"10.0.{n // 256}.{n % 256}", n * 0.001)
    assert len(limiter) == 3
    limiter.failure("x", 2)
    limiter.failure("y", 2)
    limiter.failure("x", 2.1)  # x was touched last: y and older go first
    limiter.failure("z", 2.2)
    limiter.failure("w", 2.3)
    assert limiter.blocked_until("x", 3) == 102.1


def test_limiter_refuses_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        AuthFailureLimiter(max_failures=0, window=1, block=1)


@pytest.mark.parametrize(
    ("peer", "source"),
    [("127.0.0.5:4000", "127.0.0.5"), ("::1:4000", "::1"), ("?", "?")],
)
def test_source_address(peer: str, source: str) -> None:
    assert source_address(peer) == source


# --- PipeGate: admission at the SC -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakePipe:
    """What the gate reads of a pipe."""

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.error: Exception | None = None
        self.authenticated = False

    def __str__(self) -> str:
        return f"pipe ({self.peer})"


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def make_gate(**limits: float) -> tuple[PipeGate, Metrics, Clock]:
    metrics, clock = Metrics(), Clock()
    return PipeGate(PipeLimits(**limits), metrics, clock), metrics, clock  # type: ignore[arg-type]


def fail_auth(gate: PipeGate, peer: str) -> FakePipe:
    pipe = FakePipe(peer)
    assert gate.admit(pipe) is None  # type: ignore[arg-type]
    pipe.error = AuthError("SP's token proof is wrong")
    assert gate.closed(pipe) is False  # type: ignore[arg-type]
    return pipe


def test_gate_blocks_a_source_after_failed_authentications_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate, metrics, clock = make_gate(auth_failures=3, auth_window=60, auth_block=30)
    caplog.set_level(logging.DEBUG, "edgerq.limits")
    for _ in range(3):
        fail_auth(gate, "127.0.0.9:5000")
    assert sample(metrics, "edgerq_auth_blocks_total") == 1
    assert sample(metrics, "edgerq_auth_blocked_sources") == 1
    refused = []
    for port in range(20):
        pipe = FakePipe(f"127.0.0.9:{6000 + port}")
        refusal = gate.admit(pipe)  # type: ignore[arg-type]
        assert refusal is not None and refusal.code is GoawayCode.AUTH_FAILED
        assert "too many failed authentications from 127.0.0.9" in refusal.reason
        assert gate.closed(pipe) is True  # type: ignore[arg-type]
        refused.append(pipe)
    assert sample(metrics, "edgerq_limit_hits_total", {"limit": "auth_blocked"}) == 20
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "source 127.0.0.9 blocked for 30 s" in warnings[0].message
    # Another source is admitted meanwhile; the blocked one again once the block is over.
    assert gate.admit(FakePipe("127.0.0.10:1")) is None  # type: ignore[arg-type]
    clock.now += 31
    assert gate.admit(FakePipe("127.0.0.9:7000")) is None  # type: ignore[arg-type]
    assert sample(metrics, "edgerq_auth_blocked_sources") == 0


def test_gate_counts_only_authentication_failures() -> None:
    gate, metrics, _ = make_gate(auth_failures=1)
    assert sample(metrics, "edgerq_auth_blocks_total") == 0
    pipe = FakePipe("127.0.0.3:1")
    gate.admit(pipe)  # type: ignore[arg-type]
    pipe.error = ConfigError("not an auth failure")
    gate.closed(pipe)  # type: ignore[arg-type]
    assert gate.admit(FakePipe("127.0.0.3:2")) is None  # type: ignore[arg-type]
    assert sample(metrics, "edgerq_auth_blocks_total") == 0


def test_gate_caps_unauthenticated_pipes_and_logs_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate, metrics, _ = make_gate(unauthenticated_pipes=2)
    caplog.set_level(logging.WARNING, "edgerq.limits")
    first, second = FakePipe("127.0.0.1:1"), FakePipe("127.0.0.1:2")
    assert gate.admit(first) is None  # type: ignore[arg-type]
    assert gate.admit(second) is None  # type: ignore[arg-type]
    for port in range(10):
        refusal = gate.admit(FakePipe(f"127.0.0.1:{100 + port}"))  # type: ignore[arg-type]
        assert refusal is not None and refusal.code is GoawayCode.LIMIT_EXCEEDED
    assert sample(metrics, "edgerq_limit_hits_total", {"limit": "unauthenticated_pipes"}) == 10
    first.authenticated = True
    gate.authenticated(first)  # type: ignore[arg-type]
    assert gate.admit(FakePipe("127.0.0.1:3")) is None  # type: ignore[arg-type]
    gate.closed(second)  # type: ignore[arg-type]
    assert len(gate.unauthenticated) == 1
    messages = [r.message for r in caplog.records]
    assert len(messages) == 2
    assert "2 pipes are authenticating" in messages[0]
    assert "accepting new pipes again; 10 refused" in messages[1]


# --- per-pipe bounds on a real TcpPipe with an in-memory transport -----------------


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


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


def frames_of(data: bytes | bytearray) -> list[tuple[FrameType, int, bytes]]:
    decoder = FrameDecoder()
    return [(FrameType(t), s, bytes(p)) for t, s, p in decoder.receive(bytes(data))]


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


def test_outcome_labels_are_the_ones_dashboards_use() -> None:
    assert str(Outcome.IDLE_TIMEOUT) == "idle_timeout"
    assert Outcome.for_status(504) is Outcome.GATEWAY_TIMEOUT
    assert {str(o) for o in Outcome} == {
        "ok",
        "502",
        "503",
        "504",
        "idle_timeout",
        "pipe_closed",
        "reset",
        "closed_early",
        "error",
    }


# --- configuration -------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SC_UUID = "11111111-2222-3333-4444-555555555555"


def test_consumer_limits_and_idle_timeouts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.xml",
        f"""<service_consumer>
          <idle_timeout>30</idle_timeout>
          <limits><auth_failures>3</auth_failures><auth_block>60.5</auth_block>
            <unauthenticated_pipes>8</unauthenticated_pipes>
            <handshake_timeout>2</handshake_timeout></limits>
          <listener><port>7000</port></listener>
          <services>
            <service><uuid>{SC_UUID}</uuid><port>7001</port></service>
            <service><uuid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</uuid><port>7002</port>
              <idle_timeout>0.5</idle_timeout></service>
          </services></service_consumer>""",
    )
    config = load_consumer(path, {})
    assert [s.idle_timeout for s in config.services] == [30.0, 0.5]
    limits = config.limits
    assert (limits.auth_failures, limits.auth_block, limits.auth_window) == (3, 60.5, 60.0)
    assert (limits.unauthenticated_pipes, limits.handshake_timeout) == (8, 2.0)
    assert limits.control_backlog == PipeLimits().control_backlog


def test_without_limits_the_defaults_apply_and_nothing_idles_out() -> None:
    root = Path(__file__).resolve().parents[2]
    config = load_consumer(root / "sc" / "consumer.xml", {})
    assert config.limits == PipeLimits()
    assert all(s.idle_timeout is None for s in config.services)
    provider = load_provider(root / "sp" / "provider.xml", {})
    assert provider.limits == PipeLimits()


def test_provider_limits_and_service_idle_timeout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.xml",
        f"""<service_provider>
          <limits><streams_per_pipe>100</streams_per_pipe>
            <control_backlog>65536</control_backlog></limits>
          <pipes><pipe><hostname>127.0.0.1</hostname><port>7000</port><services>
            <service><uuid>{SC_UUID}</uuid><hostname>127.0.0.1</hostname><port>80</port>
              <idle_timeout>120</idle_timeout></service>
          </services></pipe></pipes></service_provider>""",
    )
    config = load_provider(path, {})
    assert (config.limits.streams_per_pipe, config.limits.control_backlog) == (100, 65536)
    assert config.pipes[0].services[0].idle_timeout == 120.0


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        ("<idle_timeout>0</idle_timeout>", ["idle_timeout", "0"]),
        ("<limits><auth_failures>0</auth_failures></limits>", ["auth_failures"]),
        ("<limits><control_backlog>10</control_backlog></limits>", ["control_backlog"]),
        ("<limits><bogus>1</bogus></limits>", ["bogus"]),
        ("<limits/><limits/>", ["<limits> given twice"]),
    ],
)
def test_bad_limits_name_the_line_and_element(tmp_path: Path, xml: str, words: list[str]) -> None:
    path = write(
        tmp_path,
        "c.xml",
        f"<service_consumer>\n{xml}\n<listener><port>7000</port></listener></service_consumer>",
    )
    with pytest.raises(ConfigError) as info:
        load_consumer(path, {})
    message = str(info.value)
    assert f"{path}:2:" in message
    for word in words:
        assert word in message


class FakeQuic:
    """What a ``QuicPipe`` uses of qh3's ``QuicConnection``: records what is sent."""

    def __init__(self) -> None:
        self.sent: dict[int, bytearray] = {}
        self.closed_with: str | None = None

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.sent.setdefault(stream_id, bytearray()).extend(data)

    def get_send_buffer_size(self, stream_id: int) -> int:
        return 0

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        self.closed_with = reason_phrase


class FakeLink:
    """What a ``QuicPipe`` uses of its asyncio glue (``quic.PipeProtocol``)."""

    def __init__(self) -> None:
        self.quic = FakeQuic()
        self.is_client = False

    def transmit(self) -> None:
        pass

    def close_transport_later(self) -> None:
        pass


@in_loop
async def test_an_sp_opening_quic_streams_at_the_sc_loses_its_pipe() -> None:
    from edgerq.carriers.quic.carrier import QuicPipe
    from edgerq.protocol.frames import Frame

    owner = Owner()
    pipe = QuicPipe(PipeSettings(Role.CONSUMER), owner)
    link = FakeLink()
    pipe.attach(link)  # type: ignore[arg-type]
    pipe.quic_ready(("127.0.0.7", 4242))
    # The real handshake on the control stream, as an SP does it.
    sp = ProviderHandshake(None, "sp")
    pipe.quic_stream_data(0, sp.start(), False)
    await asyncio.sleep(0)
    (challenge,) = frames_of(link.quic.sent.pop(0))
    for out in sp.receive(Frame(challenge[0], 0, challenge[2])):
        pipe.quic_stream_data(0, out, False)
    assert pipe.authenticated
    await asyncio.sleep(0)
    link.quic.sent.clear()
    # Then half a frame on a QUIC stream only the SC may open.
    pipe.quic_stream_data(4, encode_frame(FrameType.DATA, 4, b"x" * 100)[:50], False)
    assert pipe.error is not None and pipe.closing
    assert "the SP opened QUIC stream 4; only the SC opens streams" in str(pipe.error)
    ((ftype, _, payload),) = frames_of(link.quic.sent[0])
    goaway = CodedReason.decode(ftype, 0, payload)
    assert goaway.code == GoawayCode.PROTOCOL_ERROR and "QUIC stream 4" in goaway.reason
    assert link.quic.closed_with is not None and "QUIC stream 4" in link.quic.closed_with
    # The rest of that frame is not decoded: it would be a protocol error of its own.
    pipe.quic_stream_data(4, b"garbage", False)
    assert "QUIC stream 4" in str(pipe.error)
