"""``ConnectionSlots``: a service's ``max_connections`` shared fairly between client
addresses, taken at once when free, else waited for in the source's turn."""

from __future__ import annotations

import asyncio
import uuid

from edgerq.config.model import ConsumerService
from edgerq.sc.fairness import Take
from edgerq.sc.slots import ConnectionSlots

A, B, C = "192.0.2.1", "192.0.2.2", "192.0.2.3"
UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def service(max_connections: int, per_source: int, waiting: int = 5) -> ConsumerService:
    return ConsumerService(
        UUID,
        "s",
        1,
        max_connections=max_connections,
        connections_per_source=per_source,
        waiting_per_source=waiting,
    )


def service_slots(max_connections: int, per_source: int, waiting: int = 5) -> ConnectionSlots:
    return ConnectionSlots(service(max_connections, per_source, waiting))


def test_a_waiting_connection_gets_the_slot_its_turn_brings() -> None:
    async def scenario() -> None:
        slots = service_slots(2, 1)
        assert slots.try_take(A) and slots.try_take(B)
        a_waits = asyncio.ensure_future(slots.wait(A, 5))
        c_waits = asyncio.ensure_future(slots.wait(C, 5))
        await asyncio.sleep(0)
        slots.release(B)  # A is at its share: C gets it
        assert await c_waits is Take.TAKEN
        assert not a_waits.done()
        slots.release(A)
        assert await a_waits is Take.TAKEN
        assert slots.fair.held == {A: 1, C: 1}

    asyncio.run(scenario())


def test_waiting_ends_in_time_refused_or_cancelled_without_leaking_a_slot() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1, waiting=1)
        assert slots.try_take(A)
        timed_out = asyncio.ensure_future(slots.wait(B, 0.05))
        await asyncio.sleep(0)
        assert await slots.wait(B, 5) is Take.REFUSED  # B has 1 waiting already
        assert await timed_out is Take.TIMED_OUT
        assert slots.fair.waiting == 0
        left = asyncio.ensure_future(slots.wait(B, 5))
        await asyncio.sleep(0)
        slots.release(A)  # granted to B's waiter...
        left.cancel()  # ...whose client leaves before it runs
        try:
            outcome = await left
        except asyncio.CancelledError:
            assert slots.in_use == 0 and slots.fair.held == {}  # the slot went back
        else:  # Python 3.11's wait_for keeps a result that came with the cancel
            assert outcome is Take.TAKEN
            assert slots.in_use == 1 and slots.fair.held == {B: 1}  # held by the caller

    asyncio.run(scenario())


def test_limits_come_from_the_service() -> None:
    slots = ConnectionSlots(
        ConsumerService(UUID, "s", 1, max_connections=10, connections_per_source=3)
    )
    assert (slots.fair.limit, slots.fair.cap_of(A)) == (10, 3)
    assert [slots.try_take(A) for _ in range(4)] == [True, True, True, False]
    assert (slots.in_use, slots.waiting) == (3, 0)


def test_a_free_slot_is_taken_without_waiting() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1)
        assert await slots.wait(A, 5) is Take.TAKEN
        assert slots.in_use == 1 and slots.fair.held == {A: 1}

    asyncio.run(scenario())


def test_no_time_left_times_out_at_once_without_queueing() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1)
        assert slots.try_take(A)
        assert await slots.wait(B, 0) is Take.TIMED_OUT
        assert await slots.wait(B, -1.0) is Take.TIMED_OUT
        assert slots.waiting == 0 and slots.fair.waiting_from(B) == 0

    asyncio.run(scenario())


def test_waiting_counts_the_queued_connections_of_every_source() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1)
        assert slots.try_take(A)
        waiters = [asyncio.ensure_future(slots.wait(s, 5)) for s in (B, B, C)]
        await asyncio.sleep(0)
        assert (slots.in_use, slots.waiting) == (1, 3)
        slots.release(A)
        slots.release(B)  # B's first, then C's turn (round robin), then B's second
        slots.release(C)
        assert [await w for w in waiters] == [Take.TAKEN] * 3
        assert (slots.in_use, slots.waiting) == (1, 0) and slots.fair.held == {B: 1}

    asyncio.run(scenario())


def test_a_reload_that_raises_max_connections_hands_the_new_slots_to_waiters() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1)
        assert slots.try_take(A)
        b_waits = asyncio.ensure_future(slots.wait(B, 5))
        c_waits = asyncio.ensure_future(slots.wait(C, 5))
        await asyncio.sleep(0)
        slots.configure(service(3, 1))
        assert await b_waits is Take.TAKEN and await c_waits is Take.TAKEN
        assert slots.in_use == 3 and slots.fair.held == {A: 1, B: 1, C: 1}

    asyncio.run(scenario())


def test_a_waiter_whose_client_left_gives_its_turn_to_the_next() -> None:
    async def scenario() -> None:
        slots = service_slots(1, 1)
        assert slots.try_take(A)
        b_waits = asyncio.ensure_future(slots.wait(B, 5))
        c_waits = asyncio.ensure_future(slots.wait(C, 5))
        await asyncio.sleep(0)
        b_waits.cancel()
        (cancelled,) = await asyncio.gather(b_waits, return_exceptions=True)
        assert isinstance(cancelled, asyncio.CancelledError)
        assert slots.waiting == 1 and slots.fair.waiting_from(B) == 0
        slots.release(A)
        assert await c_waits is Take.TAKEN
        assert slots.in_use == 1 and slots.fair.held == {C: 1}

    asyncio.run(scenario())
