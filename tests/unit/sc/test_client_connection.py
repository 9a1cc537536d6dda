"""``ClientConnection``: one client of an SC service port, its opening state (changed
only by its own methods), what it reads, and what it tells an ``http`` client when
the tunnel cannot serve it."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, cast

import pytest

from edgerq.config.model import ConsumerService
from edgerq.labels import Outcome
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.messages import OpenFailure
from edgerq.sc.client_connection import ClientConnection
from edgerq.sc.http_errors import error_response
from edgerq.sc.open_attempt import OpenState
from edgerq.sc.slots import ConnectionSlots
from tests.unit.fakes import SocketTransport, Writer

UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")
PEER = ("203.0.113.9", 51000)
SOURCE = "203.0.113.9"


Answer = tuple[ClientConnection, Stream, OpenRefused | None]


def connection(
    service: ConsumerService, slots: ConnectionSlots | None = None
) -> tuple[ClientConnection, SocketTransport, list[Answer]]:
    """A client connection accepted on a fake socket; the answers it forwards."""
    answers: list[Answer] = []
    conn = ClientConnection(
        service,
        on_done=lambda c: None,
        on_connected=lambda c: None,
        on_answer=lambda c, s, f: answers.append((c, s, f)),
        slots=slots if slots is not None else ConnectionSlots(service),
    )
    transport = client_transport()
    conn.connection_made(cast(asyncio.Transport, transport))
    return conn, transport, answers


def http_service(**settings: Any) -> ConsumerService:
    return ConsumerService(UUID, "web", 8080, type="http", **settings)


def tcp_service(**settings: Any) -> ConsumerService:
    return ConsumerService(UUID, "db", 5432, **settings)


def read(conn: ClientConnection, data: bytes) -> None:
    """The client sent ``data`` (as the event loop hands a read to the protocol)."""
    conn.get_buffer(-1)[: len(data)] = data
    conn.buffer_updated(len(data))


# --- what a client connection reads ------------------------------------------------


def client_reads(service: ConsumerService, reads: list[bytes]) -> ClientConnection:
    """A client connection (no socket, no stream yet) that read ``reads``."""
    conn = ClientConnection(
        service,
        on_done=lambda c: None,
        on_connected=lambda c: None,
        on_answer=lambda *a: None,
        slots=ConnectionSlots(service),
    )
    for data in reads:
        conn.get_buffer(-1)[: len(data)] = data
        conn.buffer_updated(len(data))
    return conn


def test_an_http_client_is_watched_until_its_head_arrives_and_every_read_counts() -> None:
    http = ConsumerService(UUID, "h", 1, type="http")
    reads = [b"GET / HTTP/1.1\r\n", b"Host: x\r", b"\n\r\n", b"body", b"more"]
    conn = client_reads(http, reads[:2])
    assert not conn.head_done and conn.watch_reads, "header_timeout still applies"
    conn = client_reads(http, reads)
    assert conn.head_done and not conn.watch_reads, "the rest of its reads are not looked at"
    assert conn.read_total == sum(map(len, reads)), "min_rate counts every byte read"
    assert conn.bytes_received == conn.read_total, "held back until a stream is bound"


def test_a_tcp_client_or_one_without_header_timeout_is_never_watched() -> None:
    for service in (
        ConsumerService(UUID, "t", 1),
        ConsumerService(UUID, "h", 1, type="http", header_timeout=None),
    ):
        conn = client_reads(service, [b"GET / HTTP/1.1\r\n", b"x"])
        assert conn.head_done and not conn.watch_reads and conn.read_total == 17


# --- its opening state ---------------------------------------------------------------


def test_a_new_connection_has_not_started_its_attempt() -> None:
    conn, _, _ = connection(tcp_service())
    assert conn.attempt.state is OpenState.WAITING_FOR_SLOT and conn.attempt.deadline == 0.0
    assert (conn.source, conn.holds_slot, conn.counted, conn.rate) == ("?", False, False, None)
    assert conn.peer == "203.0.113.9:51000" and conn.local == "127.0.0.1:8080"


def test_begin_gives_the_attempt_request_ttl_from_now_and_names_the_source() -> None:
    conn, _, _ = connection(tcp_service(request_ttl=2.5))
    attempt = conn.begin(1000.0)
    assert conn.attempt is attempt
    assert attempt.state is OpenState.WAITING_FOR_SLOT and attempt.deadline == 1002.5
    assert attempt.pipe is None and attempt.tried == frozenset()
    assert conn.source == SOURCE


def test_each_begin_is_a_fresh_attempt() -> None:
    conn, _, _ = connection(tcp_service(request_ttl=3))
    first = conn.begin(10.0)
    second = conn.begin(20.0)
    assert second is not first and second.deadline == 23.0 and first.deadline == 13.0


def test_slot_taken_starts_reading_time_without_a_rate_window_when_there_is_no_min_rate() -> None:
    conn, _, _ = connection(tcp_service())
    assert tcp_service().effective_min_rate == 0
    conn.begin(100.0)
    conn.slot_taken(101.5)
    assert conn.holds_slot and conn.accepted_at == 101.5
    assert conn.attempt.state is OpenState.WAITING_FOR_PIPE
    assert conn.rate is None


@pytest.mark.parametrize(
    ("service", "min_rate", "window"),
    [
        (http_service(), 2.0, 30.0),  # http's default min_rate
        (tcp_service(min_rate=50.0, rate_window=10.0), 50.0, 10.0),
    ],
    ids=["http-default", "tcp-configured"],
)
def test_slot_taken_opens_the_first_rate_window_with_min_rate(
    service: ConsumerService, min_rate: float, window: float
) -> None:
    conn, _, _ = connection(service)
    conn.begin(100.0)
    conn.slot_taken(104.0)
    assert conn.rate is not None
    assert (conn.rate.min_rate, conn.rate.window) == (min_rate, window)
    assert conn.rate.next_check == 104.0 + window  # counted from the slot, not from accept


def test_count_open_is_true_only_the_first_time() -> None:
    conn, _, _ = connection(tcp_service())
    assert conn.count_open() is True
    assert conn.counted is True
    assert [conn.count_open() for _ in range(3)] == [False, False, False]
    assert conn.counted is True


def test_settle_gives_the_slot_back_exactly_once() -> None:
    service = tcp_service(max_connections=5, connections_per_source=5)
    slots = ConnectionSlots(service)
    other, _, _ = connection(service, slots)  # a second connection of the same source
    conn, _, _ = connection(service, slots)
    for c in (other, conn):
        c.begin(0.0)
        assert slots.try_take(c.source)
        c.slot_taken(0.0)
    assert slots.fair.held == {SOURCE: 2}
    conn.settle()
    assert not conn.holds_slot and slots.fair.held == {SOURCE: 1}
    conn.settle()  # done twice (connection_done after a cut): the other's slot stays
    assert slots.fair.held == {SOURCE: 1} and slots.in_use == 1
    other.settle()
    assert slots.fair.held == {} and slots.in_use == 0


def test_settle_without_a_slot_releases_none() -> None:
    service = tcp_service(max_connections=1)
    slots = ConnectionSlots(service)
    assert slots.try_take(SOURCE)  # held by another connection of the same source
    conn, _, _ = connection(service, slots)
    conn.begin(0.0)
    conn.settle()
    assert slots.in_use == 1 and slots.fair.held == {SOURCE: 1}


def test_settle_cancels_the_wait_and_the_guard() -> None:
    async def scenario() -> None:
        conn, _, _ = connection(tcp_service())
        loop = asyncio.get_running_loop()

        async def wait_forever() -> None:
            await asyncio.Event().wait()

        waiting = loop.create_task(wait_forever())
        guard = loop.call_later(60, lambda: None)
        conn.wait_in(waiting)
        conn.guard_with(guard)
        conn.settle()
        assert guard.cancelled()
        (outcome,) = await asyncio.gather(waiting, return_exceptions=True)
        assert isinstance(outcome, asyncio.CancelledError) and waiting.cancelled()
        conn.settle()  # again: nothing left to cancel, no error

    asyncio.run(scenario())


def test_settle_leaves_a_finished_wait_alone() -> None:
    async def scenario() -> None:
        conn, _, _ = connection(tcp_service())

        async def served() -> None:
            pass

        task = asyncio.get_running_loop().create_task(served())
        conn.wait_in(task)
        await task
        conn.settle()
        assert task.done() and not task.cancelled()

    asyncio.run(scenario())


def test_the_sps_answer_reaches_the_on_answer_callback_with_the_stream() -> None:
    conn, _, answers = connection(tcp_service())
    stream = Stream(Writer(), 1, UUID, window=65536, max_frame=4096, sink=conn)
    stream.await_answer()
    stream.receive_open_result(None)
    assert answers == [(conn, stream, None)]
    refusal = OpenRefused(OpenFailure.CONNECT_REFUSED, "connection refused")
    other = Stream(Writer(), 3, UUID, window=65536, max_frame=4096, sink=conn)
    other.await_answer()
    other.receive_open_result(refusal)
    assert answers[1] == (conn, other, refusal)
    assert len(answers) == 2


def test_on_open_answer_forwards_what_it_is_given() -> None:
    conn, _, answers = connection(tcp_service())
    stream = Stream(Writer(), 5, UUID, window=65536, max_frame=4096)
    failure = OpenRefused(OpenFailure.CONNECT_ERROR, "pipe lost")
    conn.on_open_answer(stream, failure)
    assert answers == [(conn, stream, failure)]


# --- what it tells its client ------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "status_line", "kind"),
    [
        (502, "no SP has registered service 'web'", b"HTTP/1.1 502 Bad Gateway\r\n", "502"),
        (503, "service 'web' is busy", b"HTTP/1.1 503 Service Unavailable\r\n", "503"),
        (504, "service 'web' was not reached", b"HTTP/1.1 504 Gateway Timeout\r\n", "504"),
    ],
)
def test_fail_answers_an_http_client_that_got_nothing_yet_with_the_status(
    status: int, message: str, status_line: bytes, kind: str
) -> None:
    conn, transport, _ = connection(http_service())
    conn.fail(status, message)
    assert bytes(transport.written) == error_response(status, message)
    assert transport.written.startswith(status_line)
    assert transport.written.endswith(f"\r\n\r\nedgerq: {message}\n".encode())
    assert transport.closed and not transport.aborted
    assert conn.outcome == f"{status} {message}"
    assert conn.outcome_kind is Outcome(kind)


def test_fail_cuts_an_http_client_that_already_got_bytes() -> None:
    conn, transport, _ = connection(http_service())
    conn.on_data(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    conn.fail(502, "tunnel closed")
    assert bytes(transport.written) == b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    assert transport.aborted and not transport.closed
    assert (conn.outcome, conn.outcome_kind) == ("502 tunnel closed", Outcome.BAD_GATEWAY)


def test_fail_cuts_a_tcp_client_without_a_word() -> None:
    conn, transport, _ = connection(tcp_service())
    conn.fail(503, "service 'db' is busy")
    assert transport.written == b"" and transport.aborted
    assert (conn.outcome, conn.outcome_kind) == ("503 service 'db' is busy", Outcome.UNAVAILABLE)


def test_too_slow_answers_408_to_an_http_client_that_got_nothing_yet() -> None:
    conn, transport, _ = connection(http_service())
    reason = "request head not complete within header_timeout (10 s)"
    conn.too_slow(reason)
    assert bytes(transport.written) == error_response(408, reason)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.closed and not transport.aborted
    assert (conn.outcome, conn.outcome_kind) == (reason, Outcome.IDLE_TIMEOUT)


@pytest.mark.parametrize("answered", [True, False], ids=["http-answered", "tcp"])
def test_too_slow_cuts_a_client_that_is_not_owed_a_408(answered: bool) -> None:
    conn, transport, _ = connection(http_service() if answered else tcp_service())
    if answered:
        conn.on_data(b"HTTP/1.1 200 OK\r\n")
    conn.too_slow("too slow: 3 B in 30 s, below min_rate (2 B/s)")
    assert transport.aborted and not transport.closed
    assert bytes(transport.written) == (b"HTTP/1.1 200 OK\r\n" if answered else b"")
    assert conn.outcome == "too slow: 3 B in 30 s, below min_rate (2 B/s)"
    assert conn.outcome_kind is Outcome.IDLE_TIMEOUT


def test_too_slow_keeps_an_earlier_outcome() -> None:
    conn, _, _ = connection(tcp_service())
    conn.set_outcome(Outcome.RESET, "reset by the SP")
    conn.too_slow("too slow")
    assert (conn.outcome, conn.outcome_kind) == ("reset by the SP", Outcome.RESET)


def test_idle_expired_answers_408_to_an_http_client_that_never_sent_a_byte() -> None:
    conn, transport, _ = connection(http_service(idle_timeout=None))
    conn.idle_expired(5.0)
    message = "no request within idle_timeout (5 s)"
    assert bytes(transport.written) == error_response(408, message)
    assert transport.written.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert transport.closed and not transport.aborted


def test_idle_expired_answers_504_to_an_http_client_whose_service_never_answered() -> None:
    conn, transport, _ = connection(http_service())
    read(conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert conn.bytes_received == 27
    conn.idle_expired(2.5)
    message = "no answer within idle_timeout (2.5 s)"
    assert bytes(transport.written) == error_response(504, message)
    assert transport.written.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n")
    assert transport.closed and not transport.aborted


@pytest.mark.parametrize("answered", [True, False], ids=["http-answered", "tcp"])
def test_idle_expired_cuts_a_client_that_is_not_owed_an_answer(answered: bool) -> None:
    conn, transport, _ = connection(http_service() if answered else tcp_service())
    if answered:
        conn.on_data(b"HTTP/1.1 200 OK\r\n")
    conn.idle_expired(5.0)
    assert transport.aborted and not transport.closed
    assert bytes(transport.written) == (b"HTTP/1.1 200 OK\r\n" if answered else b"")


def test_the_idle_timer_tells_an_http_client_408() -> None:
    async def scenario() -> None:
        conn, transport, _ = connection(http_service(idle_timeout=0.02))
        for _ in range(500):  # bounded: 408 comes after 20 ms
            if transport.closed:
                break
            await asyncio.sleep(0.005)
        assert bytes(transport.written) == error_response(
            408, "no request within idle_timeout (0.02 s)"
        )
        assert conn.outcome_kind is Outcome.IDLE_TIMEOUT
        assert conn.outcome == "idle timeout (0.02 s without a byte either way)"

    asyncio.run(scenario())


def test_a_reset_before_any_stream_tells_an_http_client_502() -> None:
    conn, transport, _ = connection(http_service())
    conn.on_reset("pipe closed", Outcome.PIPE_CLOSED)
    message = "tunnel closed before the service answered (pipe closed)"
    assert bytes(transport.written) == error_response(502, message)
    assert (conn.outcome, conn.outcome_kind) == (f"502 {message}", Outcome.BAD_GATEWAY)


def test_a_reset_while_the_open_is_undecided_is_left_to_the_opener() -> None:
    conn, transport, _ = connection(http_service())
    stream = Stream(Writer(), 1, UUID, window=65536, max_frame=4096)
    stream.await_answer()
    conn.bind(stream)
    conn.on_reset("pipe lost", Outcome.PIPE_CLOSED)
    assert transport.written == b"" and not transport.closed and not transport.aborted
    assert conn.outcome_kind is None


def test_a_reset_after_the_open_was_confirmed_cuts_a_tcp_client() -> None:
    conn, transport, _ = connection(tcp_service())
    conn.begin(0.0)
    conn.slot_taken(0.0)
    stream = Stream(Writer(), 1, UUID, window=65536, max_frame=4096)
    conn.attempt.pipe_chosen(object())  # type: ignore[arg-type]
    conn.attempt.confirmed()
    conn.bind(stream)
    conn.on_reset("reset by the SP", Outcome.RESET)
    assert transport.aborted and transport.written == b""
    assert (conn.outcome, conn.outcome_kind) == ("reset by the SP", Outcome.RESET)


def client_transport() -> SocketTransport:
    """A client's socket from ``PEER`` to the service port."""
    return SocketTransport(peer=PEER)
