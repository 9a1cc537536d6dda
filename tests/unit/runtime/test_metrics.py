"""Per-connection counts kept aside (``Metrics.tally``) and added at each refresh:
a scrape sees every connection that ended before it, no more, no less."""

from __future__ import annotations

from edgerq.runtime.metrics import Metrics


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


def test_a_tallied_histogram_scrapes_as_if_each_value_were_observed() -> None:
    """Bucket edges included (``le`` is <=), the sum, the count: the same text a
    scrape of directly observed values gives."""
    values = [0.0, 0.001, 0.0011, 0.004, 0.3, 0.5, 2.5, 9.9, 10.0, 11.0, 123.0] * 3
    direct, tallied = Metrics(), Metrics()
    for value in values:
        direct.open_seconds.labels("web").observe(value)
        tallied.tally.observe(tallied.open_seconds, ("web",), value)
    tallied.refresh()
    tallied.tally.observe(tallied.open_seconds, ("web",), 0.02)  # a later one, later scrape
    direct.open_seconds.labels("web").observe(0.02)
    tallied.refresh()

    def scrape(metrics: Metrics) -> list[tuple[str, dict[str, str], float]]:
        return [
            (s.name, s.labels, s.value)
            for family in metrics.registry.collect()
            if family.name == "edgerq_stream_open_seconds"
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert scrape(tallied) == scrape(direct)
    assert ("edgerq_stream_open_seconds_count", {"service": "web"}, 34.0) in scrape(tallied)
