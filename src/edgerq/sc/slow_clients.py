"""Slow clients at the SC: ``header_timeout`` (``http``) and ``min_rate``, and the
log line and metric of every per-source limit's decision.

The policy itself (rate windows, the head end, the log gate) is in
``fairness``; this is its asyncio glue: one timer per connection, armed at
the earlier of its head deadline and the end of its rate window.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid as uuid_mod
from collections.abc import Callable

from edgerq.labels import Limit
from edgerq.runtime.metrics import Metrics
from edgerq.sc.client_connection import ClientConnection
from edgerq.sc.fairness import LogGate, Rate
from edgerq.sc.slots import ConnectionSlots

log = logging.getLogger("edgerq.sc")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about one source hitting one limit of one service."""

_LIMIT_WORDS = {
    Limit.CONNECTIONS_PER_SOURCE: "it holds its share of the slots (connections_per_source {cap})",
    Limit.WAITING_PER_SOURCE: "too many of its connections wait already "
    "(waiting_per_source {service.waiting_per_source})",
    Limit.HEADER_TIMEOUT: "header_timeout ({service.header_timeout:g} s); 408",
    Limit.MIN_RATE: "below min_rate ({service.effective_min_rate:g} B/s); cut",
}


class SlowClients:
    """Cuts clients too slow to send their request head or to move bytes."""

    def __init__(
        self,
        metrics: Metrics,
        slots: dict[uuid_mod.UUID, ConnectionSlots],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.metrics = metrics
        self.clock = clock
        self.slots = slots
        self.log_gate = LogGate(LOG_INTERVAL)
        """One line per (service, source, limit) and interval: a flood logs a count."""

    def start(self, conn: ClientConnection, now: float) -> None:
        """Arm the first check of a connection that just got its slot (and starts
        being read; time spent waiting for a slot is the SC's, not the client's):
        its head deadline (``http``) and the end of its first ``min_rate`` window,
        whichever comes first."""
        self._arm(conn, now)

    def _arm(self, conn: ClientConnection, now: float) -> None:
        service = conn.service
        when: float | None = None
        if not conn.head_done and service.header_timeout is not None and conn.written == 0:
            when = conn.accepted_at + service.header_timeout
        if conn.rate is not None:
            when = conn.rate.next_check if when is None else min(when, conn.rate.next_check)
        if when is not None:
            loop = asyncio.get_running_loop()
            conn.guard_with(loop.call_later(max(when - now, 0.0), self._check, conn))

    def _check(self, conn: ClientConnection) -> None:
        conn.guard_with(None)
        if conn.done:
            return
        now = self.clock()
        service = conn.service
        timeout = service.header_timeout
        if (
            not conn.head_done
            and timeout is not None
            and conn.written == 0
            and now >= conn.accepted_at + timeout
        ):
            self.limit_hit(conn, Limit.HEADER_TIMEOUT, "sent no complete request head")
            conn.too_slow(f"request head not complete within header_timeout ({timeout:g} s)")
            return
        rate = conn.rate
        if rate is not None and now >= rate.next_check:
            verdict, moved = rate.check(now, conn.read_total + conn.written)
            if verdict is Rate.SLOW:
                self.limit_hit(conn, Limit.MIN_RATE, f"moved {moved} B in {rate.window:g} s")
                conn.too_slow(
                    f"too slow: {moved} B in {rate.window:g} s, below min_rate "
                    f"({rate.min_rate:g} B/s)"
                )
                return
        self._arm(conn, now)

    def limit_hit(self, conn: ClientConnection, limit: Limit, what: str) -> None:
        """Count a limit's decision; log it, at most once per source, limit and interval."""
        self.metrics.limit_hit(limit)
        service = conn.service
        skipped = self.log_gate.allow((service.uuid, conn.source, limit), self.clock())
        if skipped is None:
            return
        more = f" (and {skipped} more from it in the last {LOG_INTERVAL:g} s)" if skipped else ""
        log.warning(
            "service '%s': client %s %s: %s%s",
            service.name,
            conn.source,
            what,
            _LIMIT_WORDS[limit].format(service=service, cap=self._cap(conn)),
            more,
        )

    def _cap(self, conn: ClientConnection) -> int:
        return self.slots[conn.service.uuid].fair.cap_of(conn.source)
