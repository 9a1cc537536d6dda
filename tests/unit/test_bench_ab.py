"""bench.ab's counts: strace's summary table read back, and wake-ups read from /proc."""

from __future__ import annotations

import os
import time

from bench.ab import parse_strace_summary, wakeups

SUMMARY = """\
% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 36.97    0.000596          15        39        19 openat
 15.82    0.000255          11        22           close
  7.20    0.000116          58         2         2 statx
  0.87    0.000014          14         1           futex
------ ----------- ----------- --------- --------- ----------------
100.00    0.001612          11       141        24 total
"""


def test_the_strace_table_gives_calls_by_name_errors_included_total_left_out() -> None:
    calls = parse_strace_summary(SUMMARY)
    assert calls == {"openat": 39, "close": 22, "statx": 2, "futex": 1}


def test_an_empty_table_is_no_calls() -> None:
    assert not parse_strace_summary("")


def test_each_sleep_is_a_wakeup() -> None:
    first = wakeups(os.getpid())
    for _ in range(5):
        time.sleep(0.001)
    assert wakeups(os.getpid()) - first >= 5
