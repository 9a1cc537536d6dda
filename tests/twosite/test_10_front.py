"""A client on "internet" gets answers through the front (HTTPS), and the
private web server logs the client's real address (PROXY protocol: the front
sends it, the tunnel carries it, nginx at the private site reads it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.twosite.harness import FRONT_URL, SUMMARY, TEST_TIMEOUT, Deployment, say

pytestmark = [pytest.mark.twosite, pytest.mark.timeout(TEST_TIMEOUT)]

CLIENT = f"""
import socket, ssl, urllib.request
me = socket.gethostbyname(socket.gethostname())
ctx = ssl.create_default_context(cafile="/ca.pem")
body = urllib.request.urlopen("{FRONT_URL}/hello", timeout=20, context=ctx).read().decode()
print(me, body.strip())
"""


@dataclass(frozen=True)
class FrontAnswer:
    client_ip: str
    """The client's own address on "internet"."""
    answer: str


@pytest.fixture(scope="module")
def front_answer(deployment: Deployment) -> FrontAnswer:
    """One HTTPS request from a fresh container on "internet" through the front."""
    try:
        out = deployment.client(CLIENT)
    except AssertionError as exc:
        raise AssertionError(f"the client got no answer through the front: {exc}") from None
    client_ip, answer = [*out.split(maxsplit=1), "", ""][:2]
    say(f"client {client_ip} got: {answer}")
    SUMMARY["client"] = f"{client_ip} got {answer!r}"
    return FrontAnswer(client_ip, answer)


def test_a_client_on_the_internet_gets_the_private_answer_through_the_front(
    front_answer: FrontAnswer,
) -> None:
    assert front_answer.client_ip, "the client printed no address of its own"
    expected = f"private site: hello {front_answer.client_ip}"
    assert front_answer.answer == expected, (
        f"unexpected answer through the front: {front_answer.answer!r} (expected {expected!r}: "
        "the private web server echoes the client address of the PROXY header)"
    )


def test_the_private_web_server_logs_the_clients_real_address(
    deployment: Deployment, front_answer: FrontAnswer
) -> None:
    web = deployment.privates[0]  # the site serving the front's service
    wanted = f"client={front_answer.client_ip} "
    logged = [line for line in web.logs("web").splitlines() if wanted in line]
    assert logged, f"the private web server ({web.name}) did not log {wanted.strip()}"
    shown = re.sub(r"^[^|]*\| *", "", logged[-1])
    say(f"the private web server logged: {shown}")
    SUMMARY["logged"] = f"{shown} (at {web.name})"
