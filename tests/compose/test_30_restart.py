"""Restarting any single container heals by itself within 30 s.

Each test restarts one service with `compose restart`, then polls the proxy
until a request through the tunnel gets the right answer again; the only
timing assertion is the 30 s deadline. In the udp variant (no stunnel) only
the two ends of the QUIC pipe are restarted: sp (it redials) and sc (the SP
notices the lost pipe by its heartbeat and redials).
"""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from .conftest import VARIANT

SERVICES = {
    "tcp": ["sp", "sc", "stunnel-sp", "stunnel-sc", "webserver", "proxy"],
    "udp": ["sp", "sc"],
}
RUNNING = {
    "tcp": ["webserver", "sp", "stunnel-sp", "stunnel-sc", "sc", "proxy"],
    "udp": ["webserver", "sp", "sc", "proxy"],
}


@pytest.mark.parametrize("service", SERVICES[VARIANT])
def test_restart_heals(stack, service: str) -> None:
    stack.wait_until_serving()  # a healthy start, whatever the test before did
    tcp = stack.variant == "tcp"
    if tcp:
        sidecar_before = stack.container_id("stunnel-sp")
        restarts_before = int(stack.inspect(sidecar_before, "{{.RestartCount}}"))

    stack.compose("restart", service, timeout=90)
    took = stack.wait_until_serving()
    print(f"{service}: serving again {took:.1f} s after the restart")

    # a real answer, not just a status: 1 MiB with its digest
    with requests.Session() as s:
        s.trust_env = False
        r = s.get(f"{stack.proxy_url}/bytes/1048576", timeout=30)
    assert r.status_code == 200
    assert hashlib.sha256(r.content).hexdigest() == r.headers["X-Content-SHA256"]

    if service == "sp" and tcp:
        # the sidecar left in sp's old network namespace restarted into the new one
        sidecar = stack.container_id("stunnel-sp")
        sp_id = stack.inspect(stack.container_id("sp"), "{{.Id}}")
        assert stack.inspect(sidecar, "{{.HostConfig.NetworkMode}}") == f"container:{sp_id}"
        assert stack.inspect(sidecar, "{{.State.Running}}") == "true"
        restarts = int(stack.inspect(sidecar, "{{.RestartCount}}"))
        assert sidecar != sidecar_before or restarts > restarts_before


def test_all_services_healthy_after_restarts(stack) -> None:
    deadline = time.monotonic() + 60
    while True:
        states = {}
        for service in RUNNING[stack.variant]:
            cid = stack.container_id(service)
            states[service] = stack.inspect(cid, "{{.State.Status}}/{{.State.Health.Status}}")
        if all(v == "running/healthy" for v in states.values()):
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not all healthy 60 s after the restarts: {states}")
        time.sleep(2)
