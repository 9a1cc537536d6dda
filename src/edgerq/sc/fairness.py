"""Fair service ports at the SC, as policy with no I/O (time is passed in as ``now``).

Modelled on nginx's ``limit_conn`` and ``client_header_timeout``:

- ``FairSlots``: ``max_connections`` for one service, of which one source
  address may hold at most ``per_source`` (sources listed as trusted, e.g. a
  reverse proxy in front, only the service's limit). A connection that finds
  no slot waits in its source's FIFO; when a slot frees it goes to the next
  source in turn (round-robin over sources, FIFO within one), so a source
  with a thousand waiters delays another source's first one by at most one
  turn. A source may have at most ``waiting_per_source`` connections waiting;
  past that a new one is refused at once.
- ``head_complete``: whether an HTTP request head has ended (the blank line).
- ``RateWindow``: the transfer of one connection over fixed windows; a window
  in which bytes moved, but fewer than ``min_rate`` per second, is *slow*
  (one byte every few seconds is not activity). A window with no byte at all
  is *idle*, left to ``idle_timeout``.
- ``LogGate``: at most one log line per key and interval, with the count of
  the decisions it left unlogged, for decisions a flood can repeat.

``opening.ClientOpener`` is the asyncio glue that applies them.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Iterable
from enum import Enum
from typing import Generic, TypeVar

W = TypeVar("W")
"""A waiter: whatever the glue hands out slots to (an asyncio future)."""

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def source_of(peer: str) -> str:
    """The address of a peer written ``host:port`` (``[::1]:80`` or ``::1:80`` too)."""
    host = peer.rsplit(":", 1)[0] if ":" in peer else peer
    return host.strip("[]")


def is_trusted(source: str, networks: Iterable[Network]) -> bool:
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.5 from a dual-stack socket
    return any(address in network for network in networks)


class Take(Enum):
    """What became of a connection's ask for a slot."""

    TAKEN = "taken"
    QUEUED = "queued"
    """No slot for this source now: it waits in its source's FIFO (``enqueue``)."""
    REFUSED = "refused"
    """The source already has ``waiting_per_source`` connections waiting."""
    TIMED_OUT = "timed out"
    """It waited, and no slot came within the time it had (``ConnectionSlots.wait``)."""


class FairSlots(Generic[W]):
    """The slots of one service and the per-source queues waiting for them."""

    def __init__(
        self,
        limit: int,
        per_source: int,
        waiting_per_source: int,
        trusted: Iterable[Network] = (),
    ) -> None:
        self.limit = limit
        self.per_source = per_source
        self.waiting_per_source = waiting_per_source
        self.trusted: tuple[Network, ...] = tuple(trusted)
        self.in_use = 0
        self.held: dict[str, int] = {}
        """Slots held, per source (sources holding none are not kept)."""
        self._queues: collections.OrderedDict[str, collections.deque[W]] = collections.OrderedDict()
        """Waiters per source; the order of the keys is the round-robin turn."""
        self._trusted_cache: dict[str, bool] = {}

    def configure(
        self, limit: int, per_source: int, waiting_per_source: int, trusted: Iterable[Network]
    ) -> list[tuple[str, W]]:
        """New limits (a reload); slots held stay held. Returns waiters now granted."""
        self.limit = limit
        self.per_source = per_source
        self.waiting_per_source = waiting_per_source
        self.trusted = tuple(trusted)
        self._trusted_cache.clear()
        return self._dispatch()

    @property
    def waiting(self) -> int:
        return sum(len(queue) for queue in self._queues.values())

    def waiting_from(self, source: str) -> int:
        queue = self._queues.get(source)
        return len(queue) if queue is not None else 0

    def cap_of(self, source: str) -> int:
        """Most slots ``source`` may hold at once."""
        trusted = self._trusted_cache.get(source)
        if trusted is None:
            if len(self._trusted_cache) > 4096:
                self._trusted_cache.clear()
            trusted = self._trusted_cache[source] = is_trusted(source, self.trusted)
        return self.limit if trusted else min(self.per_source, self.limit)

    def _may_take(self, source: str) -> bool:
        return self.in_use < self.limit and self.held.get(source, 0) < self.cap_of(source)

    def _take(self, source: str) -> None:
        self.in_use += 1
        self.held[source] = self.held.get(source, 0) + 1

    def try_take(self, source: str) -> bool:
        """A slot at once, when one is free for ``source`` and none of its own
        connections waits ahead of it (waiters of other sources that could take
        a free slot never exist: every release hands them out)."""
        if source not in self._queues and self._may_take(source):
            self._take(source)
            return True
        return False

    def enqueue(self, source: str, waiter: W) -> Take:
        """After ``try_take`` failed: queue ``waiter``, unless its source has too many waiting."""
        queue = self._queues.get(source)
        if queue is None:
            queue = self._queues[source] = collections.deque()
        if len(queue) >= self.waiting_per_source:
            if not queue:
                del self._queues[source]
            return Take.REFUSED
        queue.append(waiter)
        return Take.QUEUED

    def cancel(self, source: str, waiter: W) -> None:
        """``waiter`` gave up (its deadline, or the client left) before it got a slot."""
        queue = self._queues.get(source)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return
        if not queue:
            del self._queues[source]

    def release(self, source: str) -> list[tuple[str, W]]:
        """``source`` gave a slot back. Returns the waiters that now hold one (with
        their source, for whom the slot is now held)."""
        held = self.held.get(source, 0)
        if held <= 1:
            self.held.pop(source, None)
        else:
            self.held[source] = held - 1
        self.in_use -= 1
        return self._dispatch()

    def _dispatch(self) -> list[tuple[str, W]]:
        """Hand free slots to waiters: one per source in turn, skipping sources at their cap."""
        granted: list[tuple[str, W]] = []
        while self.in_use < self.limit and self._queues:
            for source in list(self._queues):
                if self._may_take(source):
                    break
            else:
                return granted  # every waiting source is at its cap
            queue = self._queues[source]
            granted.append((source, queue.popleft()))
            self._take(source)
            if queue:
                self._queues.move_to_end(source)  # its next waiter's turn comes last
            else:
                del self._queues[source]
        return granted


_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


def head_complete(tail: bytes, data: bytes | memoryview) -> tuple[bool, bytes]:
    """Whether the request head ends within ``tail + data``; and the new tail (the
    last 3 bytes, all a head end split across two reads can need)."""
    joined = tail + bytes(data)  # only until the head ends: then no more scanning
    if any(end in joined for end in _HEAD_ENDS):
        return True, b""
    return False, joined[-3:]


class Rate(Enum):
    OK = "ok"
    IDLE = "idle"
    """No byte either way in the window: ``idle_timeout``'s business."""
    SLOW = "slow"
    """Bytes moved, but fewer than ``min_rate`` per second."""


class RateWindow:
    """Bytes moved by one connection, judged once per fixed window."""

    __slots__ = ("min_rate", "moved_at_start", "started", "window")

    def __init__(self, min_rate: float, window: float, now: float, moved: int = 0) -> None:
        self.min_rate = min_rate
        self.window = window
        self.started = now
        self.moved_at_start = moved

    @property
    def next_check(self) -> float:
        return self.started + self.window

    def check(self, now: float, moved: int) -> tuple[Rate, int]:
        """At (or after) the window's end: its verdict, and the bytes it moved; a
        new window starts at ``now``."""
        during = moved - self.moved_at_start
        elapsed = max(now - self.started, self.window)
        self.started, self.moved_at_start = now, moved
        if during == 0:
            return Rate.IDLE, 0
        if during < self.min_rate * elapsed:
            return Rate.SLOW, during
        return Rate.OK, during


class LogGate:
    """At most one line per key every ``interval`` seconds; remembers ``max_keys`` keys."""

    def __init__(self, interval: float, max_keys: int = 1024) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._keys: collections.OrderedDict[object, tuple[float, int]] = collections.OrderedDict()

    def allow(self, key: object, now: float) -> int | None:
        """None: stay silent. Else log now, adding that ``n`` decisions were not logged."""
        last = self._keys.get(key)
        if last is not None and now - last[0] < self.interval:
            self._keys[key] = (last[0], last[1] + 1)
            return None
        skipped = last[1] if last is not None else 0
        self._keys[key] = (now, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return skipped
