"""Datagrams dropped at the udp pipe port: totals by reason, one summary line per interval."""

from __future__ import annotations

from edgerq.carriers.quic.drop_report import QUIET_RETRIES, DropReport


def test_the_first_drop_is_reported_at_once_then_one_line_per_interval() -> None:
    report = DropReport(interval=10.0)
    assert report.note("bad_header", "10.0.0.1", now=100.0)
    line, notable = report.summary(100.0) or ("", False)
    assert notable and "dropped 1 datagram(s)" in line and "bad_header 1" in line
    due = [report.note("too_short", f"10.0.0.{i % 300}", now=100.0 + i / 1000) for i in range(9000)]
    assert not any(due)  # within the interval: gathered, not reported
    assert report.pending == 9000
    assert report.note("too_short", "10.0.0.9", now=110.0)
    line, _ = report.summary(110.0) or ("", False)
    assert "dropped 9001 datagram(s) in 10.0 s (too_short 9001)" in line
    assert "from 64+ source address(es)" in line  # bounded memory for a spoofed flood
    assert report.totals == {"bad_header": 1, "too_short": 9001}
    assert report.summary(111.0) is None  # nothing new: no line


def test_a_few_retries_are_every_pipes_handshake_not_news() -> None:
    report = DropReport()
    for _ in range(QUIET_RETRIES):
        report.note("retry", "192.0.2.1", now=0.0)
    assert report.summary(0.0) == (
        f"dropped {QUIET_RETRIES} datagram(s) in 0.0 s (retry {QUIET_RETRIES}) "
        "from 1 source address(es), e.g. 192.0.2.1",
        False,
    )
    for _ in range(QUIET_RETRIES + 1):
        report.note("retry", "192.0.2.1", now=20.0)
    summary = report.summary(20.0)
    assert summary is not None and summary[1]  # a flood of Initials is notable
    report.note("retry", "192.0.2.1", now=40.0)
    report.note("unknown_connection", "192.0.2.1", now=40.0)
    summary = report.summary(40.0)
    assert summary is not None and summary[1]
