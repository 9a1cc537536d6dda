"""Per-connection counts kept aside (``Metrics.tally``) and added at each refresh:
a scrape sees every connection that ended before it, no more, no less."""

from __future__ import annotations

from edgerq.metrics import Metrics


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_counts_reach_the_metrics_at_refresh_and_only_once() -> None:
    metrics = Metrics()
    tally = metrics.tally
    for _ in range(3):
        tally.add(metrics.streams_open, ("web",))
        tally.add(metrics.streams, ("web", "ok"))
        tally.add(metrics.bytes, ("web", "up"), 100)
    tally.add(metrics.streams_open, ("web",), -1)
    metrics.refresh()
    assert sample(metrics, "edgerq_streams_open", {"service": "web"}) == 2
    assert sample(metrics, "edgerq_streams_total", {"service": "web", "outcome": "ok"}) == 3
    assert (
        sample(metrics, "edgerq_stream_bytes_total", {"service": "web", "direction": "up"}) == 300
    )
    metrics.refresh()  # nothing new: nothing added twice
    assert sample(metrics, "edgerq_streams_total", {"service": "web", "outcome": "ok"}) == 3
    tally.add(metrics.streams_open, ("web",), -2)
    tally.add(metrics.streams, ("web", "502"))
    metrics.refresh()
    assert sample(metrics, "edgerq_streams_open", {"service": "web"}) == 0
    assert sample(metrics, "edgerq_streams_total", {"service": "web", "outcome": "502"}) == 1


def test_refreshers_run_before_the_tally_is_added() -> None:
    """The SC counts open connections' bytes in a refresher, through the tally:
    those bytes must be in the same scrape."""
    metrics = Metrics()
    metrics.on_refresh(lambda: metrics.tally.add(metrics.bytes, ("web", "down"), 7))
    metrics.refresh()
    assert (
        sample(metrics, "edgerq_stream_bytes_total", {"service": "web", "direction": "down"}) == 7
    )
