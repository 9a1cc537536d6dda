"""The README's bench table and the before/after comparison come from results
files: every figure shown is one the run wrote, with the commit that made it."""

from __future__ import annotations

from typing import Any

import pytest
from bench.summary import compare, render, split_before

RUN: dict[str, Any] = {
    "date": "2026-12-02 06:00 UTC",
    "commit": "1234567890" + "0" * 30,
    "revision": "1234567",
    "dirty": False,
    "results": [
        {"scenario": "small-ka-16", "path": "direct", "ratio": None},
        {
            "scenario": "small-ka-16",
            "path": "edgerq-tcp",
            "ratio": 0.612,
            "cpu_us_per_unit": {"SC": 7.4, "SP": 6.6, "total": 14.0},
        },
        {
            "scenario": "small-ka-16",
            "path": "edgerq-tcp-stunnel",
            "ratio": 0.28,
            "cpu_us_per_unit": {"SC": 13.2, "stunnel": 11.4, "SP": 14.1, "total": 38.7},
        },
        {
            "scenario": "small-ka-16",
            "path": "socat",
            "ratio": 0.42,
            "cpu_us_per_unit": {"socat": 22.8, "total": 22.8},
        },
    ],
}


def test_the_table_shows_ratio_and_cpu_per_role_and_names_the_commit() -> None:
    text = render(RUN)
    assert "edgerq 1234567890 (1234567), 2026-12-02 06:00 UTC" in text
    row = next(line for line in text.splitlines() if "16 connections" in line)
    assert "0.61 · 7+7 µs" in row and "0.42 · 23 µs" in row
    assert "0.28 · 13+14 µs (+11 stunnel)" in row


def test_the_comparison_gives_the_change_in_total_cpu() -> None:
    before = {**RUN, "commit": "abcdef" + "0" * 34, "revision": "abcdef0"}
    before["results"] = [
        {**e, "cpu_us_per_unit": {"SC": 14.0, "SP": 14.0, "total": 28.0}, "ratio": 0.35}
        if e["path"] == "edgerq-tcp"
        else e
        for e in RUN["results"]
    ]
    text = compare(before, RUN)
    assert "before: edgerq abcdef0000" in text and "after: edgerq 1234567890" in text
    tcp = next(line for line in text.splitlines() if "edgerq tcp" in line)
    assert "14+14 µs" in tcp and "7+7 µs" in tcp and "-50 %" in tcp
    socat = next(line for line in text.splitlines() if "| socat" in line)
    assert "+0 %" in socat


def test_one_run_with_before_paths_compares_them_with_its_own() -> None:
    run = {**RUN, "before": {"commit": "abcdef" + "0" * 34, "revision": "abcdef0"}}
    run["results"] = [
        *RUN["results"],
        {
            "scenario": "small-ka-16",
            "path": "edgerq-tcp-before",
            "ratio": 0.5,
            "cpu_us_per_unit": {"SC": 8.0, "SP": 8.0, "total": 16.0},
        },
    ]
    before, after = split_before(run)
    text = compare(before, after)
    assert "before: edgerq abcdef0000" in text and "after: edgerq 1234567890" in text
    tcp = next(line for line in text.splitlines() if "| edgerq tcp |" in line)
    assert "8+8 µs" in tcp and "7+7 µs" in tcp and "-12 %" in tcp
    socat = next(line for line in text.splitlines() if "| socat" in line)
    assert "+0 %" in socat  # the one socat run, on both sides
    stunnel = next(line for line in text.splitlines() if "tcp + stunnel" in line)
    assert "| - |" in stunnel  # measured with this tree's edgerq only
    assert not any("(before)" in line or "-before" in line for line in text.splitlines())


def test_a_run_without_before_paths_says_so() -> None:
    with pytest.raises(ValueError, match="--before"):
        split_before(RUN)
