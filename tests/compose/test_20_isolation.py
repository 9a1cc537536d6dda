"""The two sites are separate networks: only the pipe's carrier crosses.

From the proxy (public host) the web server (private site) cannot be reached,
neither by name nor by address; through the tunnel (sc:3000) it can. In the
tcp variant the carrier is the stunnel TLS port; in the udp variant the SC's
QUIC port (the SC itself is on "wan"), which speaks QUIC only, is verified by
the SP as "sc" and admits only an SP with the pipe token.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

PROBE = r"""
import json, socket, sys, urllib.request
host, port, url = sys.argv[1], int(sys.argv[2]), sys.argv[3]
out = {}
try:
    out["resolve"] = socket.gethostbyname(host)
except OSError as exc:
    out["resolve_error"] = str(exc)
for addr in sys.argv[4:]:
    try:
        socket.create_connection((addr, port), timeout=3).close()
        out.setdefault("connected", []).append(addr)
    except OSError as exc:
        out.setdefault("refused", []).append(f"{addr}: {exc}")
if url:
    try:
        with urllib.request.urlopen(url, timeout=15) as r:
            out["url"] = [r.status, r.read().decode()]
    except Exception as exc:
        out["url_error"] = str(exc)
print(json.dumps(out))
"""


def probe(
    stack, service: str, host: str, port: int, url: str = "", addrs: tuple[str, ...] = ()
) -> dict[str, Any]:
    argv = [host, str(port), url, *addrs]
    code = f"import sys; sys.argv = [''] + {argv!r}; exec({PROBE!r})"
    res = stack.exec_python(service, code)
    assert res.returncode == 0, res.stderr
    result: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
    return result


def ips_of(stack, service: str) -> tuple[str, ...]:
    cid = stack.container_id(service)
    out = stack.inspect(cid, "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}")
    return tuple(out.split())


def test_proxy_cannot_reach_the_webserver_directly(stack) -> None:
    addrs = ips_of(stack, "webserver")
    assert addrs, "the web server has no address"
    out = probe(stack, "proxy", "webserver", 8000, "", addrs)
    assert "resolve" not in out, f"'webserver' resolves from the proxy: {out}"
    assert not out.get("connected"), f"the proxy reached the web server at {out['connected']}"


def test_proxy_reaches_the_webserver_through_the_tunnel(stack) -> None:
    out = probe(stack, "proxy", "sc", 3000, "http://sc:3000/health")
    assert out.get("url") == [200, "ok\n"], out


def test_sc_cannot_reach_the_webserver_directly(stack) -> None:
    out = probe(stack, "sc", "webserver", 8000, "", ips_of(stack, "webserver"))
    assert "resolve" not in out and not out.get("connected"), out


@pytest.mark.variant("tcp")
@pytest.mark.parametrize("target", ["sc", "proxy"])
def test_private_site_sees_only_the_tls_port(stack, target: str) -> None:
    """From the SP (private site, on "wan"), the public host's services are out of reach."""
    out = probe(stack, "sp", target, 3000 if target == "sc" else 8080, "", ips_of(stack, target))
    assert "resolve" not in out and not out.get("connected"), out
    tls = probe(stack, "sp", "stunnel-sc", 3443, "", ())
    assert "resolve" in tls, tls


@pytest.mark.variant("tcp")
def test_tls_port_speaks_tls_only(stack) -> None:
    """A plain-text client at stunnel-sc:3443 gets no edgerq handshake."""
    code = (
        "import socket; s = socket.create_connection(('stunnel-sc', 3443), timeout=5); "
        "s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); s.settimeout(5)\n"
        "try:\n data = s.recv(100)\nexcept OSError:\n data = b''\n"
        "print('plain' if data.startswith(b'HTTP') else 'not-plain')"
    )
    res = stack.exec_python("sp", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "not-plain"


@pytest.mark.variant("tcp")
def test_tls_port_requires_the_sp_client_certificate(stack) -> None:
    """TLS without stunnel-sp's client certificate is refused before reaching the SC."""
    code = (
        "import socket, ssl\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "ctx.check_hostname = False\n"
        "ctx.verify_mode = ssl.CERT_NONE\n"
        "raw = socket.create_connection(('stunnel-sc', 3443), timeout=10)\n"
        "try:\n"
        "    s = ctx.wrap_socket(raw)\n"
        "    s.sendall(b'hello')\n"
        "    print('data', s.recv(100))\n"
        "except (ssl.SSLError, OSError) as exc:\n"
        "    print('refused', exc)\n"
    )
    res = stack.exec_python("sp", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("refused"), res.stdout
    # the client may see the alert or just the closed connection; the server says why
    logs = stack.compose("logs", "--no-color", "--tail", "200", "stunnel-sc").stdout
    assert "peer did not return a certificate" in logs, logs[-2000:]


# --- udp variant: QUIC straight over "wan" -----------------------------------------

QUIC_PORT = 4433


@pytest.mark.variant("udp")
def test_private_site_sees_the_sc_but_not_the_proxy(stack) -> None:
    """From the SP, the proxy is out of reach; the SC resolves (it is on "wan")."""
    out = probe(stack, "sp", "proxy", 8080, "", ips_of(stack, "proxy"))
    assert "resolve" not in out and not out.get("connected"), out
    out = probe(stack, "sp", "sc", 12345, "", ())
    assert "resolve" in out, out
    assert not out.get("connected"), f"the SC has a tcp pipe listener in the udp variant: {out}"
    for sidecar in ("stunnel-sc", "stunnel-sp"):
        ids = stack.compose("ps", "-q", sidecar).stdout.strip()
        assert not ids, f"a stunnel sidecar runs in the udp variant: {sidecar}"


@pytest.mark.variant("udp")
def test_quic_port_ignores_plain_datagrams(stack) -> None:
    """A datagram that is not QUIC gets no answer from the SC's UDP port."""
    code = (
        "import socket\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)\n"
        f"s.sendto(b'GET / HTTP/1.0\\r\\n\\r\\n' * 80, ('sc', {QUIC_PORT}))\n"
        "try:\n    print('answer', s.recvfrom(2048)[0][:60])\n"
        "except OSError:\n    print('silent')\n"
    )
    res = stack.exec_python("sp", code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "silent", res.stdout


def run_sp(stack, *args: str) -> str:
    """A second, short-lived SP in the sp container; its log (it never stays up)."""
    res = stack.compose("exec", "-T", *args, timeout=60, check=False)
    out: str = res.stdout + res.stderr
    return out


WITHOUT_ADMIN = "sed '/<admin>/,/<\\/admin>/d' /etc/edgerq/provider.udp.xml"
"""The running SP's config minus its admin endpoint, whose port that SP holds."""


@pytest.mark.variant("udp")
def test_quic_port_refuses_an_sp_without_the_token(stack) -> None:
    script = f"{WITHOUT_ADMIN} >/tmp/no-token.xml && timeout 5 edgerq sp /tmp/no-token.xml"
    out = run_sp(stack, "-e", "EDGERQ_AUTH_TOKEN=not-the-pipe-token", "sp", "sh", "-c", script)
    assert "token proof is wrong" in out, out[-2000:]
    assert "connected and authenticated" not in out, out[-2000:]


@pytest.mark.variant("udp")
def test_sp_verifies_the_name_in_the_sc_certificate(stack) -> None:
    """The SC's certificate names "sc": an SP expecting another name refuses it."""
    script = (
        f"{WITHOUT_ADMIN} | sed 's|</ca_file>|</ca_file><server_name>not-sc</server_name>|' "
        ">/tmp/wrong-name.xml && timeout 5 edgerq sp /tmp/wrong-name.xml"
    )
    out = run_sp(stack, "sp", "sh", "-c", script)
    assert "cannot connect" in out, out[-2000:]
    assert "connected and authenticated" not in out, out[-2000:]
    logs = stack.compose("logs", "--no-color", "--tail", "200", "sc").stdout
    assert "certificate is unacceptable" in logs, logs[-2000:]
