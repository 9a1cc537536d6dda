"""Fair service ports as policy, no sockets: slots and queues, head ends, rate windows."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import pytest

from edgerq.config.loader import load_consumer
from edgerq.config.model import ConsumerService
from edgerq.errors import ConfigError
from edgerq.sc.fairness import (
    FairSlots,
    LogGate,
    Rate,
    RateWindow,
    Take,
    head_complete,
    is_trusted,
    source_of,
)

A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"


def slots(
    limit: int = 4, per_source: int = 2, waiting: int = 3, trusted: str = ""
) -> FairSlots[str]:
    networks = [ipaddress.ip_network(n) for n in trusted.split()]
    return FairSlots(limit, per_source, waiting, networks)


def take_or_wait(fair: FairSlots[str], source: str, waiter: str) -> Take:
    return Take.TAKEN if fair.try_take(source) else fair.enqueue(source, waiter)


# --- FairSlots -------------------------------------------------------------------


def test_one_source_gets_its_share_and_no_more() -> None:
    fair = slots(limit=4, per_source=2)
    assert [take_or_wait(fair, A, f"a{i}") for i in range(3)] == [
        Take.TAKEN,
        Take.TAKEN,
        Take.QUEUED,
    ]
    assert fair.held == {A: 2} and fair.in_use == 2 and fair.held[A] == fair.cap_of(A)
    # Another source still finds the slots A may not take.
    assert take_or_wait(fair, B, "b0") is Take.TAKEN
    assert take_or_wait(fair, B, "b1") is Take.TAKEN
    assert fair.in_use == 4 and fair.waiting == 1


def test_a_freed_slot_goes_to_the_sources_in_turn_not_to_the_longest_queue() -> None:
    fair = slots(limit=2, per_source=2, waiting=10)
    assert fair.try_take(A) and fair.try_take(A)
    for i in range(5):
        assert fair.enqueue(A, f"a{i}") is Take.QUEUED  # A floods the queue first
    assert fair.enqueue(B, "b0") is Take.QUEUED
    assert fair.enqueue(C, "c0") is Take.QUEUED
    # One waiter per source in turn: A's first (it queued first), then B, then C, and
    # only then A's second, however many A has queued.
    assert fair.release(A) == [(A, "a0")]
    assert fair.release(A) == [(B, "b0")]
    assert fair.release(A) == [(C, "c0")]
    assert fair.release(B) == [(A, "a1")]
    assert fair.held == {A: 1, C: 1} and fair.waiting == 3


def test_fifo_within_one_source_and_round_robin_between_sources() -> None:
    fair = slots(limit=1, per_source=1, waiting=10)
    assert fair.try_take(C)
    for waiter in ("a0", "a1", "a2"):
        fair.enqueue(A, waiter)
    for waiter in ("b0", "b1"):
        fair.enqueue(B, waiter)
    order = []
    holder = C
    for _ in range(5):
        ((holder, waiter),) = fair.release(holder)
        order.append(waiter)
    assert order == ["a0", "b0", "a1", "b1", "a2"]


def test_a_new_connection_does_not_overtake_its_own_sources_waiters() -> None:
    fair = slots(limit=2, per_source=1, waiting=10)
    assert fair.try_take(A)
    assert fair.enqueue(A, "a0") is Take.QUEUED
    assert not fair.try_take(A)  # behind a0, even once A's slot frees
    assert fair.release(A) == [(A, "a0")]


def test_too_many_waiting_from_one_source_are_refused_others_still_wait() -> None:
    fair = slots(limit=1, per_source=1, waiting=2)
    assert fair.try_take(A)
    assert [fair.enqueue(A, f"a{i}") for i in range(3)] == [Take.QUEUED, Take.QUEUED, Take.REFUSED]
    assert fair.enqueue(B, "b0") is Take.QUEUED
    assert fair.waiting_from(A) == 2 and fair.waiting_from(B) == 1


def test_no_waiting_at_all_refuses_at_once() -> None:
    fair = slots(limit=1, per_source=1, waiting=0)
    assert fair.try_take(A)
    assert fair.enqueue(B, "b0") is Take.REFUSED
    assert fair.waiting == 0


def test_a_waiter_that_gives_up_leaves_the_queue() -> None:
    fair = slots(limit=1, per_source=1, waiting=5)
    assert fair.try_take(A)
    fair.enqueue(B, "b0")
    fair.enqueue(B, "b1")
    fair.cancel(B, "b0")
    fair.cancel(B, "b0")  # twice: no harm
    fair.cancel(C, "c0")  # never queued: no harm
    assert fair.release(A) == [(B, "b1")]
    assert fair.waiting == 0 and fair.held == {B: 1}


def test_trusted_sources_are_held_to_the_service_limit_only() -> None:
    fair = slots(limit=4, per_source=1, trusted="10.0.0.0/8 2001:db8::1")
    assert all(fair.try_take("10.1.2.3") for _ in range(4))
    assert not fair.try_take("10.1.2.3")
    assert fair.cap_of("2001:db8::1") == 4 and fair.cap_of(A) == 1
    assert fair.cap_of("not an address") == 1


def test_releasing_a_sources_last_slot_forgets_it() -> None:
    fair = slots()
    assert fair.try_take(A)
    assert fair.release(A) == []
    assert fair.held == {} and fair.in_use == 0


def test_a_reload_that_raises_the_limits_hands_out_slots_at_once() -> None:
    fair = slots(limit=1, per_source=1, waiting=5)
    assert fair.try_take(A)
    fair.enqueue(A, "a0")
    fair.enqueue(B, "b0")
    granted = fair.configure(3, 2, 5, [])
    assert sorted(granted) == [(A, "a0"), (B, "b0")]
    assert fair.in_use == 3 and fair.held == {A: 2, B: 1}


def test_a_reload_that_lowers_the_limit_keeps_slots_held() -> None:
    fair = slots(limit=4, per_source=4)
    assert all(fair.try_take(A) for _ in range(4))
    assert fair.configure(2, 2, 5, []) == []
    assert fair.in_use == 4
    fair.enqueue(B, "b0")
    assert fair.release(A) == [] and fair.release(A) == []  # 2 held, limit 2
    assert fair.release(A) == [(B, "b0")]


# --- the rest of the policy ------------------------------------------------------


@pytest.mark.parametrize(
    ("reads", "complete_after"),
    [
        ([b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"], 0),
        ([b"GET / HTTP/1.1\r\n", b"Host: x\r\n", b"\r\n"], 2),
        ([b"GET / HTTP/1.1\r\nHost: x\r", b"\n\r", b"\n"], 2),  # the end split over reads
        ([b"GET / HTTP/1.0\n\n"], 0),
        ([b"GET / HTTP/1.1\r\nHost: x\r\n"] + [b"X"] * 50, None),  # slowloris
    ],
)
def test_head_complete_finds_the_blank_line_across_reads(
    reads: list[bytes], complete_after: int | None
) -> None:
    tail = b""
    for index, data in enumerate(reads):
        done, tail = head_complete(tail, memoryview(data))
        assert done == (index == complete_after)
        if done:
            break
        assert len(tail) <= 3


@pytest.mark.parametrize(
    ("moved", "verdict"),
    [
        (0, Rate.IDLE),
        (1, Rate.SLOW),
        (15, Rate.SLOW),
        (59, Rate.SLOW),
        (60, Rate.OK),
        (10**6, Rate.OK),
    ],
)
def test_a_window_with_traffic_below_min_rate_is_slow_one_without_any_is_idle(
    moved: int, verdict: Rate
) -> None:
    rate = RateWindow(min_rate=2, window=30, now=100.0, moved=500)
    assert rate.next_check == 130.0
    assert rate.check(130.0, 500 + moved) == (verdict, moved)


def test_one_byte_every_two_seconds_is_slow_window_after_window() -> None:
    rate = RateWindow(min_rate=2, window=30, now=0.0)
    moved = 0
    for window in range(1, 4):
        moved += 15  # one byte every 2 s for 30 s
        assert rate.check(30.0 * window, moved) == (Rate.SLOW, 15)
        assert rate.next_check == 30.0 * (window + 1)


def test_a_late_check_judges_the_time_that_really_passed() -> None:
    rate = RateWindow(min_rate=2, window=30, now=0.0)
    assert rate.check(60.0, 100)[0] is Rate.SLOW  # 100 B in 60 s, not in 30 s
    assert rate.next_check == 90.0


@pytest.mark.parametrize(
    ("peer", "source"),
    [
        ("192.0.2.1:4433", "192.0.2.1"),
        ("::1:80", "::1"),
        ("[2001:db8::1]:80", "2001:db8::1"),
        ("127.0.0.5:4000", "127.0.0.5"),
        ("?", "?"),
    ],
)
def test_source_of_a_peer(peer: str, source: str) -> None:
    assert source_of(peer) == source


def test_is_trusted() -> None:
    networks = [ipaddress.ip_network("172.16.0.0/12")]
    assert is_trusted("172.18.0.5", networks)
    assert is_trusted("::ffff:172.18.0.5", networks)
    assert not is_trusted("127.0.0.2", networks)
    assert not is_trusted("?", networks)


def test_log_gate_lets_one_line_through_per_key_and_interval_and_counts_the_rest() -> None:
    gate = LogGate(interval=10.0, max_keys=2)
    assert gate.allow("a", 0.0) == 0
    assert gate.allow("a", 1.0) is None
    assert gate.allow("a", 2.0) is None
    assert gate.allow("b", 3.0) == 0  # another key: its own line
    assert gate.allow("a", 10.0) == 2  # the interval is over: 2 were not logged
    gate.allow("c", 11.0)  # a third key forgets the oldest (b)
    assert gate.allow("b", 12.0) == 0


# --- configuration ---------------------------------------------------------------

UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def test_defaults_are_a_share_for_each_source_and_http_only_deadlines() -> None:
    tcp = ConsumerService(UUID, "t", 1, max_connections=50)
    http = ConsumerService(UUID, "h", 1, max_connections=50, type="http")
    assert tcp.per_source_cap == http.per_source_cap == 40
    assert ConsumerService(UUID, "s", 1, max_connections=4).per_source_cap == 4
    assert (
        ConsumerService(UUID, "s", 1, max_connections=2, connections_per_source=9).per_source_cap
        == 2
    )
    assert tcp.effective_min_rate == 0 and http.effective_min_rate == 2
    assert ConsumerService(UUID, "s", 1, min_rate=0.0, type="http").effective_min_rate == 0


def consumer(tmp_path: Path, root: str = "", service: str = "") -> Path:
    path = tmp_path / "consumer.xml"
    path.write_text(
        f"<service_consumer>{root}<listener><port>9000</port></listener><services>"
        f"<service><uuid>{UUID}</uuid><port>9001</port>{service}</service>"
        f"<service><uuid>{uuid.uuid4()}</uuid><port>9002</port><type>http</type></service>"
        "</services></service_consumer>"
    )
    return path


def test_fair_port_knobs_load_at_the_root_and_per_service(tmp_path: Path) -> None:
    config = load_consumer(
        consumer(
            tmp_path,
            root="<connections_per_source>7</connections_per_source><waiting_per_source>0"
            "</waiting_per_source><header_timeout>0</header_timeout><min_rate>4</min_rate>"
            "<rate_window>20</rate_window><trusted_sources>10.0.0.5, 172.16.0.0/12"
            "</trusted_sources>",
            service="<connections_per_source>3</connections_per_source>"
            "<header_timeout>2.5</header_timeout><min_rate>0</min_rate>",
        ),
        env={},
    )
    own, inherits = config.services
    assert own.per_source_cap == 3 and inherits.per_source_cap == 7
    assert own.waiting_per_source == inherits.waiting_per_source == 0
    assert own.header_timeout == 2.5 and inherits.header_timeout is None
    assert own.effective_min_rate == 0 and inherits.effective_min_rate == 4
    assert own.rate_window == inherits.rate_window == 20
    assert own.trusted_sources == (
        ipaddress.ip_network("10.0.0.5/32"),
        ipaddress.ip_network("172.16.0.0/12"),
    )


def test_fair_port_defaults_when_the_file_sets_none(tmp_path: Path) -> None:
    tcp, http = load_consumer(consumer(tmp_path), env={}).services
    assert tcp.per_source_cap == 40 and tcp.waiting_per_source == 1000
    assert tcp.effective_min_rate == 0 and http.effective_min_rate == 2
    assert http.header_timeout == 10 and http.rate_window == 30 and http.trusted_sources == ()


@pytest.mark.parametrize(
    ("root", "words"),
    [
        (
            "<trusted_sources>10.0.0.0/8 proxy.example</trusted_sources>",
            ["trusted_sources", "proxy.example"],
        ),
        ("<connections_per_source>0</connections_per_source>", ["connections_per_source"]),
        ("<min_rate>-1</min_rate>", ["min_rate"]),
        ("<rate_window>0.5</rate_window>", ["rate_window"]),
    ],
)
def test_bad_fair_port_knobs_are_refused_with_their_name(
    tmp_path: Path, root: str, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as error:
        load_consumer(consumer(tmp_path, root=root), env={})
    for word in words:
        assert word in str(error.value)
