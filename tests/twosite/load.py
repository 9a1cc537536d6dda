"""Load for the two-site test: HTTPS GETs through the front, counting failures.

Runs in a container on the "internet" network until SIGTERM (or, should
nobody stop it, for LIMIT seconds), then prints one JSON line: requests, failed,
the seconds from the first to the last failure (the outage as clients saw it),
the first few errors and what stopped it ("signal" or "time limit"). Each
worker makes a new TLS connection per request.

    python3 load.py URL CA_FILE WORKERS [LIMIT]
"""

from __future__ import annotations

import json
import signal
import ssl
import sys
import threading
import time
import urllib.request

URL, CA, WORKERS = sys.argv[1], sys.argv[2], int(sys.argv[3])
LIMIT = float(sys.argv[4]) if len(sys.argv) > 4 else 300.0
stop = threading.Event()
lock = threading.Lock()
requests = failed = 0
errors: list[str] = []
fail_times: list[float] = []
signal.signal(signal.SIGTERM, lambda *_: stop.set())


def one(ctx: ssl.SSLContext) -> str | None:
    try:
        with urllib.request.urlopen(URL, timeout=15, context=ctx) as resp:
            if resp.status == 200 and resp.read().startswith(b"private site: hello"):
                return None
            return f"HTTP {resp.status}"
    except Exception as exc:  # any failure counts
        return f"{type(exc).__name__}: {exc}"


def worker() -> None:
    global requests, failed
    ctx = ssl.create_default_context(cafile=CA)
    while not stop.is_set():
        err = one(ctx)
        with lock:
            requests += 1
            if err is not None:
                failed += 1
                fail_times.append(time.monotonic())
                if len(errors) < 3:
                    errors.append(f"{time.strftime('%H:%M:%S')} {err}")
        time.sleep(0.05)


threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
for t in threads:
    t.start()
print("load: started", flush=True)
stopped = "signal" if stop.wait(LIMIT) else "time limit"
stop.set()
for t in threads:
    t.join()
window = round(max(fail_times) - min(fail_times), 2) if fail_times else 0.0
result = {
    "requests": requests,
    "failed": failed,
    "failure_window_s": window,
    "errors": errors,
    "stopped": stopped,
}
print(json.dumps(result), flush=True)
