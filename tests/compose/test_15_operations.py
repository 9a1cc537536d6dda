"""The admin endpoints inside the SC and SP containers: what the healthchecks
and an operator read."""

from __future__ import annotations

import json

import requests

from tests.compose.conftest import compose

READ = (
    "import urllib.request, sys\n"
    "r = urllib.request.urlopen('http://127.0.0.1:9100' + sys.argv[1], timeout=5)\n"
    "print(r.read().decode())\n"
)


def admin(service: str, path: str) -> str:
    done = compose("exec", "-T", service, "python", "-c", READ, path, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readyz_of_sc_and_sp(http: requests.Session, proxy_url: str) -> None:
    assert "listeners bound" in admin("sc", "/readyz")
    assert "registered on: " in admin("sp", "/readyz")


def test_status_shows_the_pipe_and_the_service(http: requests.Session, proxy_url: str) -> None:
    assert http.get(proxy_url + "/", timeout=15).status_code == 200
    status = json.loads(admin("sc", "/status"))
    (pipe,) = status["pipes"]
    assert pipe["streams_total"] >= 1  # the proxy's connection to the SC came through it
    (service,) = status["services"]
    assert (service["name"], service["pipes"]) == ("sample_webserver", 1)


def test_metrics_are_prometheus_text(http: requests.Session, proxy_url: str) -> None:
    assert http.get(proxy_url + "/", timeout=15).status_code == 200
    text = admin("sc", "/metrics")
    assert "edgerq_pipes_connected{" in text
    # The proxy keeps its connections to the SC open: counted as open, and timed.
    assert 'edgerq_streams_open{service="sample_webserver"}' in text
    assert 'edgerq_stream_open_seconds_count{service="sample_webserver"}' in text
    assert "edgerq_pipes_connected{" in admin("sp", "/metrics")


def test_edgerq_status_prints_a_summary() -> None:
    done = compose(
        "exec", "-T", "sc", "edgerq", "status", "http://127.0.0.1:9100", timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pipes: 1" in done.stdout
    assert "service 'sample_webserver'" in done.stdout
