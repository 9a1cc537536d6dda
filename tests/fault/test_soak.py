"""A soak: minutes of steady load (a few clients doing small uploads back to back,
one doing a 1 MiB transfer every few seconds), sampling the open file
descriptors and RSS of the SC and the SP. After a warm-up neither may grow.

The rules, and why:

- FDs: every sample after the warm-up <= the warm-up's highest + the number of
  load clients. Each in-flight request holds one descriptor at the SC (its
  client) and one at the SP (its service connection), so the count moves with
  what is in flight at the sampling instant, by at most the clients; a leak of
  one descriptor per request or per stream would pass any fixed slack within
  seconds at this request rate.
- RSS: the last sample <= the warm-up's highest + max(20 %, 8 MiB). The warm-up
  lets the allocator, the stream buffers and the imported code settle; the
  margin absorbs fragmentation and the buffers of transfers in flight. A leak
  of even ~1 KiB per request (tens of thousands of requests here) would exceed
  it; the request count is printed so the sensitivity can be worked out.

``EDGERQ_SOAK_SECONDS`` sets the duration (default 300); the warm-up is the
first fifth of it, at most 60 s.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fault import report
from tests.fault.harness import BackendProcess, Load, open_fds, rss_kib, wait_served
from tests.integration.conftest import Processes, free_port, start_consumer, start_provider

pytestmark = pytest.mark.fault

SOAK = float(os.environ.get("EDGERQ_SOAK_SECONDS", "300"))
WARMUP = min(60.0, SOAK / 5)
SAMPLE_EVERY = 5.0
CLIENTS = 3
BIG_PAUSE = 5.0
FD_SLACK = CLIENTS + 1
RSS_MARGIN = 0.20
RSS_MARGIN_MIN_KIB = 8 * 1024


@pytest.mark.timeout(SOAK + 180)
def test_soak_fds_and_rss_stay_flat(processes: Processes, tmp_path: Path) -> None:
    carrier = os.environ.get("EDGERQ_SOAK_CARRIER", "tcp")
    backend = BackendProcess(free_port()).start()
    load: Load | None = None
    try:
        consumer = start_consumer(processes, carrier, tmp_path)
        sp = start_provider(processes, consumer, backend.port)
        assert consumer.sc.proc is not None and sp.proc is not None
        pids = {"sc": consumer.sc.proc.pid, "sp": sp.proc.pid}
        wait_served(consumer.service_port, 60, time.monotonic())
        load = Load(
            consumer.service_port,
            small=CLIENTS,
            big=1,
            big_size=1 << 20,
            big_pause=BIG_PAUSE,
        ).start()
        samples: list[tuple[float, dict[str, tuple[int, int]]]] = []
        started = time.monotonic()
        while (now := time.monotonic()) - started < SOAK:
            samples.append(
                (now - started, {who: (open_fds(pid), rss_kib(pid)) for who, pid in pids.items()})
            )
            time.sleep(min(SAMPLE_EVERY, max(0.0, started + SOAK - time.monotonic())))
        samples.append(
            (
                time.monotonic() - started,
                {who: (open_fds(pid), rss_kib(pid)) for who, pid in pids.items()},
            )
        )
        load.stop()
    finally:
        if load is not None:
            load.stop()
        backend.stop()
    ok, failed, corrupted = load.snapshot()
    warm = [s for t, s in samples if t <= WARMUP]
    after = [s for t, s in samples if t > WARMUP]
    assert warm and after, "the soak is too short for a warm-up and a steady phase"
    figures: dict[str, object] = {
        "duration_s": SOAK,
        "warmup_s": WARMUP,
        "requests_ok": ok,
        "big_ok": load.ok_big,
        "failed": failed,
        "corrupted": corrupted,
        "samples": len(samples),
    }
    problems = []
    for who in pids:
        fds_warm = max(s[who][0] for s in warm)
        fds_after = max(s[who][0] for s in after)
        rss_warm = max(s[who][1] for s in warm)
        rss_final = after[-1][who][1]
        rss_bound = rss_warm + max(int(rss_warm * RSS_MARGIN), RSS_MARGIN_MIN_KIB)
        figures[who] = {
            "fds_warmup_max": fds_warm,
            "fds_after_max": fds_after,
            "fds_final": after[-1][who][0],
            "rss_warmup_kib": rss_warm,
            "rss_after_max_kib": max(s[who][1] for s in after),
            "rss_final_kib": rss_final,
            "rss_bound_kib": rss_bound,
            "fds_series": [s[who][0] for _, s in samples],
            "rss_series_kib": [s[who][1] for _, s in samples],
        }
        if fds_after > fds_warm + FD_SLACK:
            problems.append(f"{who}: open fds grew from {fds_warm} to {fds_after}")
        if rss_final > rss_bound:
            problems.append(f"{who}: RSS grew from {rss_warm} KiB to {rss_final} KiB")
    report.record("soak", carrier, figures)
    assert not load.corrupted, f"corrupted responses: {load.corrupted[:5]}"
    assert failed == 0, f"{failed} requests failed with no fault injected"
    assert not problems, "; ".join(problems)
