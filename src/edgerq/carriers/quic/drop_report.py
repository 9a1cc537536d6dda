"""Datagrams a pipe port turned away: counted by reason, summed up in one line per interval.

A flood (random bytes, forged Initials, packets for connections that never
existed) must be visible to an operator without one log line per datagram.
``DropReport`` keeps running totals by reason (read into the
``edgerq_udp_datagrams_dropped_total`` metric at each scrape) and decides when
a summary line is due: the first drop after a quiet spell is reported at once,
later ones are gathered and reported at most once per ``interval`` seconds;
the carrier flushes what is left when the interval ends. No I/O, clock passed in.
"""

from __future__ import annotations

from collections import Counter

SUMMARY_INTERVAL = 10.0
"""Seconds between two summary lines while drops go on."""
MAX_SOURCES = 64
"""Distinct source addresses remembered per interval (for the summary's count)."""
QUIET_RETRIES = 32
"""Retries (``Drop.RETRY``) per interval that are only pipes dialing, not notable:
each legitimate pipe's first Initial is answered with one."""


class DropReport:
    """Totals by reason, and what the next summary line says."""

    def __init__(self, interval: float = SUMMARY_INTERVAL) -> None:
        self.interval = interval
        self.totals: Counter[str] = Counter()
        self._pending: Counter[str] = Counter()
        self._sources: set[str] = set()
        self._more_sources = False
        self._window_start: float | None = None
        self._next_report = 0.0

    def note(self, reason: str, source: str, now: float) -> bool:
        """Count one drop; True when a summary line is due now (``summary`` gives it)."""
        self.totals[reason] += 1
        self._pending[reason] += 1
        if len(self._sources) < MAX_SOURCES:
            self._sources.add(source)
        elif source not in self._sources:
            self._more_sources = True
        if self._window_start is None:
            self._window_start = now
        return now >= self._next_report

    @property
    def pending(self) -> int:
        """Drops not reported in a summary line yet."""
        return sum(self._pending.values())

    def next_report(self) -> float:
        """When the next summary line may be written."""
        return self._next_report

    def summary(self, now: float) -> tuple[str, bool] | None:
        """The summary line of the drops since the last one, and whether it is
        notable (anything but a few Retries); None when there were none. Starts a
        new interval."""
        if not self._pending:
            return None
        retries = self._pending.get("retry", 0)
        notable = retries > QUIET_RETRIES or len(self._pending) > (1 if retries else 0)
        count = sum(self._pending.values())
        start = self._window_start if self._window_start is not None else now
        reasons = ", ".join(f"{reason} {n}" for reason, n in self._pending.most_common())
        sources = f"{len(self._sources)}{'+' if self._more_sources else ''}"
        example = min(self._sources) if self._sources else "?"
        line = (
            f"dropped {count} datagram(s) in {max(now - start, 0.0):.1f} s ({reasons}) "
            f"from {sources} source address(es), e.g. {example}"
        )
        self._pending.clear()
        self._sources.clear()
        self._more_sources = False
        self._window_start = None
        self._next_report = now + self.interval
        return line, notable
