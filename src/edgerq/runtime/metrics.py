"""Prometheus metrics of one daemon, in a registry of its own."""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as _Counter
from prometheus_client import Gauge as _Gauge
from prometheus_client import Histogram as _Histogram
from prometheus_client.metrics import MetricWrapperBase

from edgerq.errors import AuthError
from edgerq.labels import Limit

OPEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class _MemoLabels(MetricWrapperBase):
    """``labels()`` keeping each child by its label values: one dict hit per call.

    prometheus_client checks, converts and locks on every ``labels()`` (~1.9 us
    against ~0.8 us here), and the daemons call it several times per tunneled
    connection. Children are never removed from these metrics.
    """

    def labels(self, *labelvalues: Any, **labelkwargs: Any) -> Any:
        if labelkwargs:
            return super().labels(*labelvalues, **labelkwargs)
        memo: dict[tuple[Any, ...], Any] | None = self.__dict__.get("_edgerq_children")
        if memo is None:
            memo = self.__dict__["_edgerq_children"] = {}
        child = memo.get(labelvalues)
        if child is None:
            child = memo[labelvalues] = super().labels(*labelvalues)
        return child


class Counter(_MemoLabels, _Counter):
    pass


class Gauge(_MemoLabels, _Gauge):
    pass


class Histogram(_MemoLabels, _Histogram):
    pass


class Tally:
    """Counts made once per tunneled connection, kept as plain numbers and added
    to their metrics at the next ``Metrics.refresh`` (which every scrape of
    ``/metrics`` calls first), so a scrape sees every connection that ended
    before it.

    Each ``inc``/``dec`` of prometheus_client takes a lock, five or six times per
    connection, which shows on short connections; here it is one dict update. The
    pending sums are bounded by the label sets in use (services x outcomes), not
    by traffic."""

    def __init__(self) -> None:
        self._pending: dict[tuple[Counter | Gauge, tuple[str, ...]], float] = {}
        self._observed: dict[tuple[Histogram, tuple[str, ...]], list[float]] = {}
        """Per histogram child: the count of each bucket, then the sum."""

    def add(self, metric: Counter | Gauge, labels: tuple[str, ...], amount: float = 1) -> None:
        """``metric.labels(*labels).inc(amount)``, at the next flush (a gauge may
        take a negative ``amount``; a counter may not)."""
        key = (metric, labels)
        self._pending[key] = self._pending.get(key, 0) + amount

    def observe(self, metric: Histogram, labels: tuple[str, ...], amount: float) -> None:
        """``metric.labels(*labels).observe(amount)``, at the next flush (~0.4 us
        against ~4 us: a bucket found by bisection, no lock)."""
        key = (metric, labels)
        counts = self._observed.get(key)
        bounds: list[float] = metric._upper_bounds
        if counts is None:
            counts = self._observed[key] = [0.0] * (len(bounds) + 1)
        counts[bisect.bisect_left(bounds, amount)] += 1  # the first bound >= amount
        counts[-1] += amount

    def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (metric, labels), amount in pending.items():
            if amount:
                metric.labels(*labels).inc(amount)
        observed, self._observed = self._observed, {}
        for (histogram, labels), counts in observed.items():
            # prometheus_client has no public call to add bucket counts; its
            # child keeps one value per bucket and one for the sum (test_tally
            # checks the result against observe()).
            child = histogram.labels(*labels)
            for bucket, count in zip(child._buckets, counts, strict=False):
                if count:
                    bucket.inc(count)
            child._sum.inc(counts[-1])


class Metrics:
    """Everything an operator graphs or alerts on, labelled by what it concerns."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._refreshers: list[Callable[[], None]] = []
        self.tally = Tally()
        """Per-connection counts (streams, streams_open, bytes), added at refresh."""
        r = self.registry
        self.pipes = Gauge(
            "edgerq_pipes_connected", "Authenticated pipes now up", ["carrier", "sp"], registry=r
        )
        self.registrations = Counter(
            "edgerq_registrations", "Service registrations by result", ["result"], registry=r
        )
        self.streams_open = Gauge(
            "edgerq_streams_open", "Tunneled connections now open", ["service"], registry=r
        )
        self.streams = Counter(
            "edgerq_streams", "Tunneled connections by outcome", ["service", "outcome"], registry=r
        )
        self.bytes = Counter(
            "edgerq_stream_bytes",
            "Bytes relayed (up: client to service, down: service to client)",
            ["service", "direction"],
            registry=r,
        )
        self.open_seconds = Histogram(
            "edgerq_stream_open_seconds",
            "Time from accepting a client to the service being connected",
            ["service"],
            buckets=OPEN_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "edgerq_stream_retries",
            "Connections opened again on another pipe before the service answered, by cause",
            ["service", "cause"],
            registry=r,
        )
        self.auth_failures = Counter(
            "edgerq_auth_failures", "Pipes refused for a wrong or missing token proof", registry=r
        )
        self.rejected = Counter(
            "edgerq_pipes_rejected",
            "Pipes closed for a protocol error, by reason",
            ["reason"],
            registry=r,
        )
        self.auth_blocks = Counter(
            "edgerq_auth_blocks",
            "Source addresses blocked for too many failed authentications",
            registry=r,
        )
        self.auth_blocked_sources = Gauge(
            "edgerq_auth_blocked_sources", "Source addresses now blocked", registry=r
        )
        self.limit_hits = Counter(
            "edgerq_limit_hits",
            "Pipes, streams or frames refused by a limit against abuse, by limit",
            ["limit"],
            registry=r,
        )

        self.udp_dropped = Counter(
            "edgerq_udp_datagrams_dropped",
            "Datagrams the udp pipe port turned away before any connection, by reason",
            ["reason"],
            registry=r,
        )

    def on_refresh(self, refresher: Callable[[], None]) -> None:
        """Call ``refresher`` before every scrape (to add what was counted lazily)."""
        self._refreshers.append(refresher)

    def refresh(self) -> None:
        """Bring every metric up to date; call before reading any (a scrape does)."""
        for refresher in self._refreshers:
            refresher()
        self.tally.flush()

    def limit_hit(self, limit: Limit) -> None:
        """A limit against abuse refused something (passed to pipes as ``on_limit``)."""
        self.limit_hits.labels(limit).inc()

    def pipe_closed(
        self, carrier: str, sp: str, authenticated: bool, error: Exception | None
    ) -> None:
        """A pipe is gone (either daemon): one fewer up, and why it failed if it did."""
        if authenticated:
            self.pipes.labels(carrier, sp).dec()
        if isinstance(error, AuthError):
            self.auth_failures.inc()
        elif error is not None:
            self.rejected.labels(type(error).__name__).inc()
