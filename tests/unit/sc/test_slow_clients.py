"""``SlowClients``: ``header_timeout`` (408 to an ``http`` client that sent no complete
request head) and ``min_rate`` (a connection that moves too few bytes is cut), judged
on the daemon's clock, and one log line per source, limit and interval.

The timers run on the real loop with delays of tens of milliseconds; the decisions
read the injected clock, which each test moves past the deadline itself.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest

from edgerq.config.model import ConsumerService
from edgerq.labels import Limit, Outcome
from edgerq.runtime.metrics import Metrics
from edgerq.sc.client_connection import ClientConnection
from edgerq.sc.http_errors import error_response
from edgerq.sc.slots import ConnectionSlots
from edgerq.sc.slow_clients import LOG_INTERVAL, SlowClients
from tests.unit.fakes import SocketTransport
from tests.unit.sc.test_client_connection import SOURCE, client_transport, read

UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")
HEAD = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"


class Clock:
    """The SC's clock, moved by the test; counts how often it was read."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return self.now


class Setup:
    """One service, its slots and a ``SlowClients`` on an injected clock."""

    def __init__(self, service: ConsumerService) -> None:
        self.service = service
        self.clock = Clock()
        self.metrics = Metrics()
        self.slots = {service.uuid: ConnectionSlots(service)}
        self.slow = SlowClients(self.metrics, self.slots, self.clock)

    def client(self) -> tuple[ClientConnection, SocketTransport]:
        """A client accepted now on a fake socket, holding its slot (not yet watched)."""
        conn = ClientConnection(
            self.service,
            on_done=lambda c: None,
            on_connected=lambda c: None,
            on_answer=lambda *a: None,
            slots=self.slots[self.service.uuid],
        )
        transport = client_transport()
        conn.connection_made(cast(asyncio.Transport, transport))
        now = self.clock()
        conn.begin(now)
        assert self.slots[self.service.uuid].try_take(conn.source)
        conn.slot_taken(now)
        return conn, transport

    def hits(self, limit: Limit) -> float:
        value = self.metrics.registry.get_sample_value(
            "edgerq_limit_hits_total", {"limit": str(limit)}
        )
        return 0.0 if value is None else value


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for ``condition`` (bounded), checking every few milliseconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.002)


async def past(delay: float) -> None:
    """Return once a timer of ``delay`` s, armed now, has run: the loop runs its timers
    in order of their time, so a guard armed earlier for less has run (or was
    cancelled) by then. For what must not happen, which no condition can wait for."""
    loop = asyncio.get_running_loop()
    later: asyncio.Future[None] = loop.create_future()
    loop.call_later(delay, later.set_result, None)
    await later


def checks(setup: Setup) -> Callable[[], bool]:
    """True once the guard has read the clock (a check ran) since this was called."""
    before = setup.clock.reads
    return lambda: setup.clock.reads > before


def http(**settings: Any) -> ConsumerService:
    settings.setdefault("header_timeout", 0.02)
    return ConsumerService(UUID, "web", 8080, type="http", **settings)


def tcp(**settings: Any) -> ConsumerService:
    return ConsumerService(UUID, "db", 5432, **settings)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "edgerq.sc" and r.levelno == logging.WARNING
    ]


# --- header_timeout ------------------------------------------------------------------


def test_an_http_client_without_a_complete_head_gets_408_at_header_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.sc")

    async def scenario() -> None:
        setup = Setup(http(min_rate=0))
        conn, transport = setup.client()
        read(conn, b"GET / HTTP/1.1\r\nHost: x\r\n")  # not the blank line yet
        setup.slow.start(conn, setup.clock.now)
        setup.clock.now += 0.02
        await until(lambda: transport.closed)
        reason = "request head not complete within header_timeout (0.02 s)"
        assert bytes(transport.written) == error_response(408, reason)
        assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        assert (conn.outcome, conn.outcome_kind) == (reason, Outcome.IDLE_TIMEOUT)
        assert setup.hits(Limit.HEADER_TIMEOUT) == 1
        assert warnings(caplog) == [
            f"service 'web': client {SOURCE} sent no complete request head: "
            "header_timeout (0.02 s); 408"
        ]

    asyncio.run(scenario())


def test_the_head_deadline_is_judged_on_the_daemons_clock() -> None:
    async def scenario() -> None:
        setup = Setup(http(min_rate=0))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        ran = checks(setup)
        await until(ran)  # the timer fired, but on the SC's clock no time has passed
        assert not transport.closed and transport.written == b""
        setup.clock.now += 0.02
        await until(lambda: transport.closed)
        assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")

    asyncio.run(scenario())


def test_a_head_that_arrived_in_time_is_not_cut() -> None:
    async def scenario() -> None:
        setup = Setup(http(min_rate=0))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        read(conn, HEAD)
        assert conn.head_done
        setup.clock.now += 1.0
        ran = checks(setup)
        await until(ran)
        assert not transport.is_closing() and transport.written == b""
        assert conn.outcome_kind is None and setup.hits(Limit.HEADER_TIMEOUT) == 0

    asyncio.run(scenario())


def test_an_http_client_that_already_got_an_answer_is_owed_no_408() -> None:
    async def scenario() -> None:
        setup = Setup(http(min_rate=0, header_timeout=0.01))
        conn, transport = setup.client()
        conn.on_data(b"HTTP/1.1 100 Continue\r\n\r\n")
        setup.slow.start(conn, setup.clock.now)
        setup.clock.now += 1.0
        await past(0.03)  # no head deadline once answered, and no min_rate: no check
        assert setup.clock.reads == 1  # the one read by setup.client()
        assert not transport.is_closing() and setup.hits(Limit.HEADER_TIMEOUT) == 0

    asyncio.run(scenario())


def test_a_connection_that_ended_is_not_judged() -> None:
    async def scenario() -> None:
        setup = Setup(http(min_rate=0))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        conn.connection_lost(None)  # the client left first
        assert conn.done
        setup.clock.now += 1.0
        await past(0.04)  # the 20 ms guard ran, and found the connection done
        assert transport.written == b"" and setup.hits(Limit.HEADER_TIMEOUT) == 0
        assert setup.clock.reads == 1

    asyncio.run(scenario())


# --- min_rate ---------------------------------------------------------------------------


def test_a_connection_below_min_rate_is_cut(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.sc")

    async def scenario() -> None:
        setup = Setup(tcp(min_rate=100.0, rate_window=0.02))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        read(conn, b"x")  # 1 B in 0.02 s: below 100 B/s
        setup.clock.now += 0.02
        await until(lambda: transport.aborted)
        assert transport.written == b""
        reason = "too slow: 1 B in 0.02 s, below min_rate (100 B/s)"
        assert (conn.outcome, conn.outcome_kind) == (reason, Outcome.IDLE_TIMEOUT)
        assert setup.hits(Limit.MIN_RATE) == 1
        assert warnings(caplog) == [
            f"service 'db': client {SOURCE} moved 1 B in 0.02 s: below min_rate (100 B/s); cut"
        ]

    asyncio.run(scenario())


def test_an_http_client_below_min_rate_before_any_answer_gets_408() -> None:
    async def scenario() -> None:
        setup = Setup(http(min_rate=10000.0, rate_window=0.02, header_timeout=None))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        read(conn, HEAD)  # 27 B in 0.02 s: below 10000 B/s
        setup.clock.now += 0.02
        await until(lambda: transport.closed)
        reason = "too slow: 27 B in 0.02 s, below min_rate (10000 B/s)"
        assert bytes(transport.written) == error_response(408, reason)

    asyncio.run(scenario())


def test_a_fast_enough_or_idle_window_is_not_cut_and_the_next_is_judged() -> None:
    async def scenario() -> None:
        setup = Setup(tcp(min_rate=100.0, rate_window=0.02))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        read(conn, b"x" * 10)  # 10 B in 0.02 s: 500 B/s
        setup.clock.now += 0.02
        await until(checks(setup))
        assert not transport.is_closing()
        setup.clock.now += 0.02  # a window with no byte at all: idle_timeout's business
        await until(checks(setup))
        assert not transport.is_closing()
        read(conn, b"x")  # the third window: 1 B, too slow
        setup.clock.now += 0.02
        await until(lambda: transport.aborted)
        assert conn.outcome == "too slow: 1 B in 0.02 s, below min_rate (100 B/s)"
        assert setup.hits(Limit.MIN_RATE) == 1

    asyncio.run(scenario())


def test_bytes_written_to_the_client_count_as_moved() -> None:
    async def scenario() -> None:
        setup = Setup(tcp(min_rate=100.0, rate_window=0.02))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        conn.on_data(b"y" * 10)  # the service talks, the client only listens
        setup.clock.now += 0.02
        await until(checks(setup))
        assert not transport.aborted and setup.hits(Limit.MIN_RATE) == 0

    asyncio.run(scenario())


def test_settle_stops_the_guard() -> None:
    async def scenario() -> None:
        setup = Setup(tcp(min_rate=100.0, rate_window=0.02))
        conn, transport = setup.client()
        setup.slow.start(conn, setup.clock.now)
        read(conn, b"x")
        conn.settle()
        setup.clock.now += 1.0
        await past(0.04)  # the 20 ms guard would have run by now
        assert not transport.aborted and setup.clock.reads == 1
        assert setup.hits(Limit.MIN_RATE) == 0

    asyncio.run(scenario())


# --- the log line of a limit's decision -------------------------------------------------


def test_one_line_per_source_limit_and_interval_with_the_count_of_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.sc")
    setup = Setup(tcp(max_connections=10, connections_per_source=4, waiting_per_source=7))
    conn, _ = setup.client()
    for _ in range(5):
        setup.slow.limit_hit(conn, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
        setup.clock.now += 1.0
    setup.slow.limit_hit(conn, Limit.WAITING_PER_SOURCE, "refused")  # another limit
    assert setup.hits(Limit.CONNECTIONS_PER_SOURCE) == 5
    assert setup.hits(Limit.WAITING_PER_SOURCE) == 1
    setup.clock.now += LOG_INTERVAL  # the interval is over
    setup.slow.limit_hit(conn, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
    share = "it holds its share of the slots (connections_per_source 4)"
    assert warnings(caplog) == [
        f"service 'db': client {SOURCE} waits for a slot: {share}",
        f"service 'db': client {SOURCE} refused: too many of its connections wait already "
        "(waiting_per_source 7)",
        f"service 'db': client {SOURCE} waits for a slot: {share} "
        "(and 4 more from it in the last 10 s)",
    ]
    assert setup.hits(Limit.CONNECTIONS_PER_SOURCE) == 6


def test_another_source_gets_its_own_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.sc")
    setup = Setup(tcp(max_connections=10, connections_per_source=4))
    first, _ = setup.client()
    second, _ = setup.client()
    second.source = "198.51.100.4"
    setup.slow.limit_hit(first, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
    setup.slow.limit_hit(first, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
    setup.slow.limit_hit(second, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
    assert [line.split(" waits")[0] for line in warnings(caplog)] == [
        f"service 'db': client {SOURCE}",
        "service 'db': client 198.51.100.4",
    ]


def test_a_trusted_source_is_logged_with_its_own_cap(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.sc")
    setup = Setup(
        tcp(
            max_connections=10,
            connections_per_source=4,
            trusted_sources=(ipaddress.ip_network("203.0.113.0/24"),),
        )
    )
    conn, _ = setup.client()
    setup.slow.limit_hit(conn, Limit.CONNECTIONS_PER_SOURCE, "waits for a slot")
    assert warnings(caplog) == [
        f"service 'db': client {SOURCE} waits for a slot: it holds its share of the slots "
        "(connections_per_source 10)"
    ]
