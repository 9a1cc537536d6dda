"""docs/compose.md's Locust tables come from the results file ``bench.locust`` wrote:
the figures are those scripts/loadtest printed, per target, with the commit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bench.locust import exact_latency, parse_summary, render, run_time

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


PROVENANCE = {
    "commit": "abcdef1234" + "0" * 30,
    "revision": "abcdef1",
    "dirty": False,
    "date": "2026-12-02 08:00 UTC",
    "build": "pure Python",
}


def test_the_tables_give_medians_the_ratio_to_direct_and_every_rounds_p50() -> None:
    data = {
        "provenance": PROVENANCE,
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


def test_exact_latencies_replace_locusts_whole_milliseconds(tmp_path: Path) -> None:
    (tmp_path / "latency.json").write_text(
        '{"requests": 7000, "mean_ms": 3.1, "p50_ms": 1.42, "p95_ms": 9.5, "p99_ms": 51.0}'
    )
    assert exact_latency(tmp_path) == {
        "exact_p50": 1.42,
        "exact_p95": 9.5,
        "exact_p99": 51.0,
        "exact_mean": 3.1,
    }
    assert exact_latency(tmp_path / "missing") == {}
    runs = [run(1, "direct", 1, 0.0) | {"exact_p50": 1.42, "exact_p95": 9.0, "exact_p99": 50.0}]
    runs.append(
        run(1, "tunnel", 3, 0.6) | {"exact_p50": 2.84, "exact_p95": 19.0, "exact_p99": 60.0}
    )
    data = {"provenance": PROVENANCE, "users": 50, "duration": "50s", "rounds": 1, "runs": runs}
    text = render(data)
    assert "exact latencies" in text
    tunnel = next(line for line in text.splitlines() if line.startswith("| through the tunnel"))
    cells = [c.strip() for c in tunnel.strip("|").split("|")]
    assert cells[2:4] == ["2.84 ms", "2.0 x"]
