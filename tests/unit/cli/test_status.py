"""`edgerq status`: the /status JSON as lines a person reads."""

from __future__ import annotations

from typing import Any

import pytest

from edgerq.cli.status import status_lines, status_url

SERVICE: dict[str, Any] = {
    "name": "web",
    "uuid": "0" * 32,
    "port": 8080,
    "pipes": 0,
    "open": 2,
    "bytes_up": 10,
    "bytes_down": 20,
}


def sc_status(**service: Any) -> dict[str, Any]:
    return {
        "role": "sc",
        "version": "1.0",
        "uptime_s": 12.3,
        "pipes": [],
        "services": [{**SERVICE, **service}],
    }


def test_connections_waiting_are_shown_for_each_kind() -> None:
    (line,) = status_lines(sc_status(waiting_for_slot=3, waiting_for_pipe=2))[2:]
    assert line == (
        "  service 'web' :8080: 0 pipe(s), 2 open, 3 waiting for a slot, 2 waiting for a pipe,"
        " 10 B up, 20 B down"
    )


def test_nobody_waiting_says_nothing_of_it() -> None:
    (line,) = status_lines(sc_status(waiting_for_slot=0, waiting_for_pipe=0))[2:]
    assert "waiting" not in line and "2 open, 10 B up" in line


def test_an_older_sc_without_the_counts_is_read_as_before() -> None:
    lines = status_lines(sc_status())
    assert lines[0] == "SC edgerq 1.0, up 12 s"
    assert lines[2] == "  service 'web' :8080: 0 pipe(s), 2 open, 10 B up, 20 B down"


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("127.0.0.1:9100", "http://127.0.0.1:9100/status"),
        ("http://127.0.0.1:9100", "http://127.0.0.1:9100/status"),
        ("http://127.0.0.1:9100/", "http://127.0.0.1:9100/status"),
        ("https://sc.example:9443/status", "https://sc.example:9443/status"),
        ("[::1]:9100", "http://[::1]:9100/status"),
        ("localhost:9100", "http://localhost:9100/status"),
    ],
)
def test_an_admin_endpoint_is_a_url_or_host_and_port(given: str, url: str) -> None:
    assert status_url(given) == url
