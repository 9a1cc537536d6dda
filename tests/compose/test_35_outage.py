"""Requests that arrive while the tunnel is down get an answer from the tunnel.

While sp restarts, a client of the proxy must get either the page (once the
pipe is back) or the SC's own gateway error (its `http` service type answers
502/503/504 when no pipe serves the request within `request_ttl`) — never a
request left hanging until the proxy gives up on its upstream.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

PROXY_TIMEOUT_BODY = b"did not answer in time"  # proxy_php's own 504: upstream read timeout


def _get(url: str) -> tuple[int | None, bytes, float]:
    start = time.monotonic()
    try:
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(url, timeout=60)
        return r.status_code, r.content[:200], time.monotonic() - start
    except requests.RequestException as exc:
        return None, str(exc).encode()[:200], time.monotonic() - start


def test_requests_during_an_sp_restart_are_answered(stack) -> None:
    stack.wait_until_serving()
    with ThreadPoolExecutor(max_workers=24) as pool:
        restart = pool.submit(stack.compose, "restart", "sp", timeout=90)
        futures = []
        for i in range(16):  # 8 s of requests, across the restart
            futures.append(pool.submit(_get, f"{stack.proxy_url}/during-outage/{i}"))
            time.sleep(0.5)
        restart.result()
        results = [f.result() for f in futures]
    stack.wait_until_serving()

    report = "\n".join(f"{s} {t:5.1f}s {b[:80]!r}" for s, b, t in results)
    unanswered = [r for r in results if r[0] is None or PROXY_TIMEOUT_BODY in r[1]]
    assert not unanswered, f"requests left hanging during the sp restart:\n{report}"
    assert all(s in (200, 502, 503, 504) for s, _, _ in results), report
    assert any(s == 200 for s, _, _ in results[-4:]), report
