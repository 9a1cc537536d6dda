"""Isolation: a private site reaches only the public host's published ports
(over tcp the stunnel pipe port; udp: its QUIC port, which a TCP probe cannot
see), nothing else of the public host; the internet reaches nothing at the
private site.

Over udp the SC itself is on "internet", but its service ports, admin
endpoint and everything else are bound to its "edge" address only: probing
its name on "internet" finds them closed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.twosite.harness import PUBLIC_NAME, TEST_TIMEOUT, Deployment, Site, say

pytestmark = [pytest.mark.twosite, pytest.mark.timeout(TEST_TIMEOUT)]

PROBE = """
import socket, sys
from concurrent.futures import ThreadPoolExecutor

def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
        return f"{target} open"
    except OSError as exc:
        return f"{target} closed {type(exc).__name__}"

with ThreadPoolExecutor(max(1, len(sys.argv) - 1)) as pool:
    for line in pool.map(probe, sys.argv[1:]):
        print(line)
"""
"""Tries a TCP connection to each HOST:PORT (3 s each, all at once); prints
"HOST:PORT open" or "HOST:PORT closed <error>" per target, in order."""

PIPE_PORT = 3443
"""stunnel-sc's port on "internet" (tcp carrier)."""
QUICK_DNS = ("--dns-option", "timeout:2", "--dns-option", "attempts:1")
"""The probe from "internet" gives a name up after 2 s, not glibc's 2 x 5 s: Docker's
DNS answers the names it knows at once and never answers others (no way out)."""


@dataclass(frozen=True)
class Probes:
    pipe: str | None
    """The pipe's TCP port as the private site dials it (None over udp)."""
    from_private: dict[str, str]
    """target -> "open" or "closed <error>", probed from the SP's network namespace."""
    from_internet: dict[str, str]
    """The same from a fresh container on "internet"."""


def parse(output: str, targets: list[str], where: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in output.splitlines():
        target, _, state = line.partition(" ")
        assert state == "open" or state.startswith("closed"), f"{where}: bad probe line {line!r}"
        found[target] = state
    assert list(found) == targets, f"{where}: probed {list(found)}, expected {targets}"
    return found


def shown(results: dict[str, str]) -> str:
    return ";".join(f"{target} {state}" for target, state in results.items())


@pytest.fixture(scope="module")
def probes(deployment: Deployment, private: Site) -> Probes:
    """Both probes at once: from the private site toward the public host, and
    from the internet toward the private site."""
    sp = private.container("sp")
    sp_ip = deployment.address_on_internet(sp)
    assert sp_ip, f"the SP of {private.name} has no address on {deployment.internet}"
    sc_addr = deployment.public.env_value("EDGERQ_SC_ADDRESS")
    pipe = f"{PUBLIC_NAME}:{PIPE_PORT}" if deployment.carrier == "tcp" else None
    toward_public = [
        *([pipe] if pipe else []),
        f"{sc_addr}:12345",
        f"{sc_addr}:3000",
        f"{sc_addr}:9100",
        f"{PUBLIC_NAME}:3000",
        f"{PUBLIC_NAME}:9100",
        f"{PUBLIC_NAME}:9101",
        f"{PUBLIC_NAME}:12345",
    ]
    toward_private = [f"{sp_ip}:2080", f"{sp_ip}:9100", f"{sp_ip}:8080", "web:8080"]
    with ThreadPoolExecutor(2) as pool:
        from_private = pool.submit(
            deployment.run_python, PROBE, *toward_public, network=f"container:{sp}"
        )
        from_internet = pool.submit(
            deployment.run_python, PROBE, *toward_private, options=QUICK_DNS
        )
        results = Probes(
            pipe,
            parse(from_private.result(), toward_public, f"from {private.name}"),
            parse(from_internet.result(), toward_private, "from the internet"),
        )
    say(f"from the private site {private.name}: {shown(results.from_private)}")
    say(f"from the internet: {shown(results.from_internet)}")
    return results


def test_the_private_site_reaches_the_pipe_port(probes: Probes, private: Site) -> None:
    if probes.pipe is None:
        pytest.skip("udp carrier: the pipe port is QUIC over UDP, no TCP port to probe")
    state = probes.from_private[probes.pipe]
    assert state == "open", (
        f"the pipe port {probes.pipe} is not reachable from the private site {private.name}: "
        f"{state}"
    )


def test_the_private_site_reaches_nothing_else_of_the_public_host(
    probes: Probes, private: Site
) -> None:
    reached = [
        t for t, state in probes.from_private.items() if t != probes.pipe and state == "open"
    ]
    assert not reached, (
        f"the private site {private.name} reaches more than the pipe port: {reached} open "
        f"({shown(probes.from_private)})"
    )


def test_the_internet_reaches_nothing_at_the_private_site(probes: Probes, private: Site) -> None:
    reached = [t for t, state in probes.from_internet.items() if state == "open"]
    assert not reached, (
        f"something at the private site {private.name} is reachable from the internet: "
        f"{reached} open ({shown(probes.from_internet)})"
    )
