"""The SC's pipe gate: the auth-failure policy, blocks per source, the cap on
pipes still authenticating, and the source address they are counted by."""

from __future__ import annotations

import logging

import pytest

from edgerq.config.model import PipeLimits
from edgerq.errors import AuthError, ConfigError
from edgerq.protocol.messages import GoawayCode
from edgerq.runtime.metrics import Metrics
from edgerq.sc.gate import AuthFailureLimiter, PipeGate
from tests.unit.fakes import FakePipe

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


# --- PipeGate: admission at the SC -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def make_gate(**limits: float) -> tuple[PipeGate, Metrics, Clock]:
    metrics, clock = Metrics(), Clock()
    return PipeGate(PipeLimits(**limits), metrics, clock), metrics, clock  # type: ignore[arg-type]


def fail_auth(gate: PipeGate, peer: str) -> FakePipe:
    pipe = FakePipe(peer=peer)
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
        pipe = FakePipe(peer=f"127.0.0.9:{6000 + port}")
        refusal = gate.admit(pipe)  # type: ignore[arg-type]
        assert refusal is not None and refusal.code is GoawayCode.AUTH_FAILED
        assert "too many failed authentications from 127.0.0.9" in refusal.reason
        assert gate.closed(pipe) is True  # type: ignore[arg-type]
        refused.append(pipe)
    assert sample(metrics, "edgerq_limit_hits_total", {"limit": "auth_blocked"}) == 20
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "source 127.0.0.9 blocked for 30 s" in warnings[0].message
    # Another source is admitted meanwhile; the blocked one again once the block is over.
    assert gate.admit(FakePipe(peer="127.0.0.10:1")) is None  # type: ignore[arg-type]
    clock.now += 31
    assert gate.admit(FakePipe(peer="127.0.0.9:7000")) is None  # type: ignore[arg-type]
    assert sample(metrics, "edgerq_auth_blocked_sources") == 0


def test_gate_counts_only_authentication_failures() -> None:
    gate, metrics, _ = make_gate(auth_failures=1)
    assert sample(metrics, "edgerq_auth_blocks_total") == 0
    pipe = FakePipe(peer="127.0.0.3:1")
    gate.admit(pipe)  # type: ignore[arg-type]
    pipe.error = ConfigError("not an auth failure")
    gate.closed(pipe)  # type: ignore[arg-type]
    assert gate.admit(FakePipe(peer="127.0.0.3:2")) is None  # type: ignore[arg-type]
    assert sample(metrics, "edgerq_auth_blocks_total") == 0


def test_gate_caps_unauthenticated_pipes_and_logs_per_episode(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate, metrics, _ = make_gate(unauthenticated_pipes=2)
    caplog.set_level(logging.WARNING, "edgerq.limits")
    first, second = FakePipe(peer="127.0.0.1:1"), FakePipe(peer="127.0.0.1:2")
    assert gate.admit(first) is None  # type: ignore[arg-type]
    assert gate.admit(second) is None  # type: ignore[arg-type]
    for port in range(10):
        refusal = gate.admit(FakePipe(peer=f"127.0.0.1:{100 + port}"))  # type: ignore[arg-type]
        assert refusal is not None and refusal.code is GoawayCode.LIMIT_EXCEEDED
    assert sample(metrics, "edgerq_limit_hits_total", {"limit": "unauthenticated_pipes"}) == 10
    first.authenticated = True
    gate.authenticated(first)  # type: ignore[arg-type]
    assert gate.admit(FakePipe(peer="127.0.0.1:3")) is None  # type: ignore[arg-type]
    gate.closed(second)  # type: ignore[arg-type]
    assert len(gate.unauthenticated) == 1
    messages = [r.message for r in caplog.records]
    assert len(messages) == 2
    assert "2 pipes are authenticating" in messages[0]
    assert "accepting new pipes again; 10 refused" in messages[1]
