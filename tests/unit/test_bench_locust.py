"""docs/compose.md's Locust tables come from the results file ``bench.locust`` wrote:
the figures are those scripts/loadtest printed, per target, with the commit."""

from __future__ import annotations

from typing import Any

import pytest
from bench.locust import parse_summary, render, run_time

LINE = (
    "loadtest summary (tunnel): 7548 requests, 0 failures, 151.8 req/s, "
    "p50 4 ms, p95 62 ms, p99 270 ms"
)


def test_the_summary_line_scripts_loadtest_prints_is_read_whole() -> None:
    text = "Locust's tables...\n" + LINE + "\nloadtest: reports in /tmp/x\n"
    assert parse_summary(text) == {
        "requests": 7548,
        "failures": 0,
        "rps": 151.8,
        "p50": 4.0,
        "p95": 62.0,
        "p99": 270.0,
    }


def test_a_run_without_a_summary_is_an_error_not_a_zero() -> None:
    with pytest.raises(RuntimeError, match="no summary"):
        parse_summary("Locust printed nothing useful\n")


def test_a_run_time_is_checked_before_anything_runs() -> None:
    assert run_time("50s") == "50s"
    assert run_time("1m30s") == "1m30s"
    with pytest.raises(Exception, match="run time"):
        run_time("fifty")


def run(round_: int, target: str, p50: float, proxy_ms: float) -> dict[str, Any]:
    return {
        "round": round_,
        "target": target,
        "loadavg": 2.0,
        "requests": 7000,
        "failures": 0,
        "rps": 150.0,
        "p50": p50,
        "p95": 20.0,
        "p99": 50.0,
        "cpu_ms_per_request": {"proxy": proxy_ms, "sc": 0.25},
    }


def test_the_tables_give_medians_the_ratio_to_direct_and_every_rounds_p50() -> None:
    data = {
        "provenance": {
            "commit": "abcdef1234" + "0" * 30,
            "revision": "abcdef1",
            "dirty": False,
            "date": "2026-12-02 08:00 UTC",
            "build": "pure Python",
        },
        "users": 50,
        "duration": "50s",
        "rounds": 3,
        "runs": [
            run(1, "direct", 1, 0.0),
            run(1, "tunnel", 5, 0.7),
            run(2, "direct", 2, 0.0),
            run(2, "tunnel", 3, 0.6),
            run(3, "direct", 1, 0.0),
            run(3, "tunnel", 4, 0.66),
        ],
    }
    text = render(data)
    assert "abcdef1234" in text and "2026-12-02 08:00 UTC" in text
    tunnel = next(line for line in text.splitlines() if line.startswith("| through the tunnel"))
    cells = [c.strip() for c in tunnel.strip("|").split("|")]
    assert cells[2] == "4 ms"  # median of 5, 3, 4
    assert cells[3] == "4.0 x"  # against direct's median 1
    assert cells[7] == "5 3 4"
    proxy = next(line for line in text.splitlines() if line.startswith("| proxy"))
    assert [c.strip() for c in proxy.strip("|").split("|")][1:] == ["0.00", "0.66"]
