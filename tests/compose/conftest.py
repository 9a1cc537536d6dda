"""Fixtures of the Docker Compose end-to-end tests.

These tests drive a running stack (docker-compose.yml) from the host; they
are skipped unless EDGERQ_COMPOSE_E2E=1, which scripts/compose-e2e sets after
it has built the stack, started it and waited until every service is healthy.

Environment:
  EDGERQ_COMPOSE_E2E=1   run these tests
  EDGERQ_PROXY_URL       the proxy as seen from the host (default: asked from
                         compose: `compose port proxy 8080`)
  COMPOSE_PROJECT_NAME   the stack's project (as for docker compose)
  COMPOSE_FILE           the Compose files (as for docker compose); for the udp
                         variant docker-compose.yml:docker-compose.udp.yml
  EDGERQ_COMPOSE_VARIANT which stack runs: "tcp" (default: docker-compose.yml,
                         stunnel sidecars) or "udp" (with docker-compose.udp.yml:
                         QUIC over "wan", no stunnel). Tests marked
                         @pytest.mark.variant("tcp") run only in that variant.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = [str(ROOT / "scripts" / "compose")]
RECOVERY_DEADLINE = 30.0  # seconds: the suite's promise after any single restart

STANDARD_ANSWER = b"edgerq sample webserver: standard answer\n"
VARIANTS = ("tcp", "udp")
VARIANT = os.environ.get("EDGERQ_COMPOSE_VARIANT", "tcp")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "compose: end-to-end test of the Docker Compose stack")
    config.addinivalue_line(
        "markers", "variant(*names): run only in these variants of the stack (tcp, udp)"
    )
    if VARIANT not in VARIANTS:
        raise pytest.UsageError(f"EDGERQ_COMPOSE_VARIANT={VARIANT!r}: expected one of {VARIANTS}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    enabled = os.environ.get("EDGERQ_COMPOSE_E2E") == "1"
    skip = pytest.mark.skip(reason="needs the running Compose stack: run scripts/compose-e2e")
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.compose)
            if not enabled:
                item.add_marker(skip)
            marker = item.get_closest_marker("variant")
            if marker is not None and VARIANT not in marker.args:
                item.add_marker(
                    pytest.mark.skip(reason=f"only in the {'/'.join(marker.args)} variant")
                )


def compose(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run scripts/compose (docker compose v2 or docker-compose v1) in the repo root."""
    return subprocess.run(
        [*COMPOSE, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=check
    )


def container_id(service: str) -> str:
    out = compose("ps", "-q", service).stdout.split()
    assert out, f"no container for service {service}"
    return out[0]


def docker_inspect(container: str, fmt: str) -> str:
    return subprocess.run(
        ["docker", "inspect", "-f", fmt, container],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()


def exec_python(service: str, code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a Python snippet inside a service's container (all images have python)."""
    return compose("exec", "-T", service, "python", "-c", code, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def proxy_url() -> str:
    url = os.environ.get("EDGERQ_PROXY_URL")
    if url:
        return url.rstrip("/")
    mapping = compose("port", "proxy", "8080").stdout.strip().splitlines()[-1]
    host, _, port = mapping.rpartition(":")
    host = "127.0.0.1" if host in ("0.0.0.0", "", "[::]", "::") else host
    return f"http://{host}:{port}"


@pytest.fixture()
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, never through an environment proxy
        yield session


def wait_until_serving(proxy_url: str, deadline: float = RECOVERY_DEADLINE) -> float:
    """Poll the proxy until a request through the tunnel gets the right answer.

    Returns the seconds it took; fails the test when ``deadline`` passes.
    """
    start = time.monotonic()
    last = "no answer yet"
    while True:
        elapsed = time.monotonic() - start
        if elapsed > deadline:
            pytest.fail(
                f"requests through the proxy did not recover within {deadline:.0f} s ({last})"
            )
        try:
            with requests.Session() as s:
                s.trust_env = False
                r = s.get(f"{proxy_url}/recovery-probe", timeout=5)
            if r.status_code == 200 and r.content == STANDARD_ANSWER:
                return elapsed
            last = f"HTTP {r.status_code}: {r.content[:80]!r}"
        except requests.RequestException as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)


class Stack:
    """The running Compose stack, as the tests see it (a fixture: no imports needed)."""

    root = ROOT
    standard_answer = STANDARD_ANSWER
    variant = VARIANT
    recovery_deadline = RECOVERY_DEADLINE

    def __init__(self, proxy_url: str) -> None:
        self.proxy_url = proxy_url

    compose = staticmethod(compose)
    container_id = staticmethod(container_id)
    inspect = staticmethod(docker_inspect)
    exec_python = staticmethod(exec_python)

    def wait_until_serving(self, deadline: float = RECOVERY_DEADLINE) -> float:
        return wait_until_serving(self.proxy_url, deadline)


@pytest.fixture(scope="session")
def stack(proxy_url: str) -> Stack:
    return Stack(proxy_url)
