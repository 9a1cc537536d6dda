"""``edgerq status URL|HOST:PORT``: a running daemon's ``/status``, read and printed for a person.

``status_lines`` renders the JSON (no I/O, tested on its own); ``show_status``
fetches it. Fields an older daemon does not send are left out, not shown as 0.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any


def status_url(address: str) -> str:
    """The ``/status`` URL of an admin endpoint given as a URL or as ``HOST:PORT``."""
    target = address.strip().rstrip("/")
    if "://" not in target:
        target = "http://" + target
    if not target.endswith("/status"):
        target += "/status"
    return target


def show_status(url: str) -> int:
    """Print the status of the daemon whose admin endpoint is ``url`` (or ``HOST:PORT``);
    1 if unreadable."""
    target = status_url(url)
    try:
        with urllib.request.urlopen(target, timeout=5) as response:
            status = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"edgerq: cannot read {target}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(status_lines(status)))
    return 0


def status_lines(status: dict[str, Any]) -> list[str]:
    lines = [f"{status['role'].upper()} edgerq {status['version']}, up {status['uptime_s']:.0f} s"]
    if status["role"] == "sc":
        lines.append(f"pipes: {len(status['pipes'])}")
        for p in status["pipes"]:
            lines.append(
                f"  pipe {p['id']} '{p['sp']}' from {p['peer']} ({p['carrier']}), up "
                f"{p['up_s']:.0f} s, {p['streams_open']} open, {p['streams_total']} total"
            )
        for s in status["services"]:
            waiting = "".join(
                f" {n} waiting for a {what},"
                for what, n in (
                    ("slot", s.get("waiting_for_slot")),
                    ("pipe", s.get("waiting_for_pipe")),
                )
                if n
            )
            lines.append(
                f"  service '{s['name']}' :{s['port']}: {s['pipes']} pipe(s), {s['open']} open,"
                f"{waiting} {s['bytes_up']} B up, {s['bytes_down']} B down"
            )
        return lines
    for p in status["pipes"]:
        state = "registered" if p["registered"] else "not registered"
        lines.append(
            f"  pipe '{p['name']}' to {p['sc']} ({p['carrier']}): {state}, "
            f"{p['streams_open']} open, {p['streams_total']} total"
        )
        for s in p["services"]:
            proxy = s.get("proxy_protocol")
            lines.append(
                f"    service '{s['name']}' -> {s['target']}"
                f"{f' (PROXY protocol {proxy})' if proxy else ''}"
                f"{'' if s['accepted'] else ' (not accepted by the SC)'}"
            )
    return lines
