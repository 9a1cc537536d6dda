"""The admin endpoint: metrics, health, readiness and `edgerq status`."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, read_all
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    consumer_xml,
    free_port,
    provider_xml,
    wait_for,
)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_metrics_health_readiness_and_status(processes: Processes, backend: HashService) -> None:
    """Every port configured as 0: the ready line on stdout and ``/status`` name the
    ports actually bound, and they are the ones that answer."""
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}],
            token="t",
            extra="<admin><port>0</port></admin>",
        ),
    )
    bound = sc.ready()
    listener, port = bound["listeners"]["tcp"], bound["services"][str(SERVICE_UUID)]
    assert bound["role"] == "sc" and 0 not in (listener, port, bound["admin"])
    assert len(sc.ready_lines()) == 1  # one line, and only ready lines on stdout
    assert sc.out_path.read_text().count("\n") == 1
    sc_url = sc.admin_url
    assert get(f"{sc_url}/healthz") == (200, "ok\n")
    assert get(f"{sc_url}/readyz")[0] == 200  # listeners bound, even with no SP yet
    assert sc.status()["bound"] == bound

    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "t")]))
    assert sp.ready() == {"role": "sp", "admin": sp.ready()["admin"]}
    sp.wait_registered()
    assert sc.serving() == 1
    sp_url = sp.admin_url
    status, body = get(f"{sp_url}/readyz")
    assert status == 200 and "pipe1" in body

    for i in range(5):  # through the service port the ready line named
        assert download(port, 10_000 + i, i) == sha256(payload(10_000 + i, i))
    _, metrics = get(f"{sc_url}/metrics")
    assert 'edgerq_pipes_connected{carrier="tcp",sp="pipe1"} 1.0' in metrics
    assert 'edgerq_registrations_total{result="accepted"} 1.0' in metrics
    assert 'edgerq_streams_total{outcome="ok",service="hash"} 5.0' in metrics
    assert 'edgerq_stream_bytes_total{direction="down",service="hash"} 50010.0' in metrics
    assert "edgerq_stream_open_seconds_bucket" in metrics
    _, sp_metrics = get(f"{sp_url}/metrics")
    assert 'edgerq_streams_total{outcome="ok",service="svc0"} 5.0' in sp_metrics

    out = subprocess.run(
        [sys.executable, "-m", "edgerq", "status", sc_url], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "SC edgerq" in out.stdout and "'pipe1'" in out.stdout
    assert "50010 B down" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "edgerq", "status", sp_url], capture_output=True, text=True
    )
    assert out.returncode == 0 and "registered" in out.stdout
    host_port = sp_url.removeprefix("http://")  # as a person types it
    out = subprocess.run(
        [sys.executable, "-m", "edgerq", "status", host_port], capture_output=True, text=True
    )
    assert out.returncode == 0 and "registered" in out.stdout, out.stderr

    assert get(f"{sc_url}/nothing")[0] == 404


def test_sp_not_ready_without_an_sc(processes: Processes, backend: HashService) -> None:
    sp = processes.start("sp", provider_xml([(free_port(), [(SERVICE_UUID, backend.port)], None)]))
    status, body = get(f"{sp.admin_url}/readyz")
    assert status == 503 and "no pipe registered" in body
    assert get(f"{sp.admin_url}/healthz")[0] == 200


def test_status_shows_which_services_get_a_proxy_protocol_header(
    processes: Processes, backend: HashService
) -> None:
    sp_xml = provider_xml([(free_port(), [(SERVICE_UUID, backend.port)], None)]).replace(
        "</port></service>", "</port><proxy_protocol>v2</proxy_protocol></service>"
    )
    sp = processes.start("sp", sp_xml)
    admin_url = sp.admin_url
    _, body = get(f"{admin_url}/status")
    assert json.loads(body)["pipes"][0]["services"][0]["proxy_protocol"] == "v2"
    out = subprocess.run(
        [sys.executable, "-m", "edgerq", "status", admin_url],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert f"service 'svc0' -> 127.0.0.1:{backend.port} (PROXY protocol v2)" in out.stdout


def test_auth_failures_are_counted(processes: Processes, backend: HashService) -> None:
    sc = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}], token="right"))
    listener = sc.listener_port()
    processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], "wrong")]))
    sc.wait_log("token proof is wrong")
    sc.wait_log("closed before authenticating")
    _, metrics = sc.get("/metrics")
    # The SP keeps redialing with backoff, so the count only grows; at least one.
    failures = re.search(r"^edgerq_auth_failures_total (\S+)$", metrics, re.M)
    assert failures is not None and float(failures.group(1)) >= 1


def metric_value(metrics: str, sample: str) -> float:
    match = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_byte_counters_move_while_a_connection_stays_open(
    processes: Processes, backend: HashService
) -> None:
    """A pooled keep-alive connection shows its bytes at once, not when it ends."""
    sc = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}]))
    listener, port = sc.listener_port(), sc.service_port()
    sp = processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
    sp.wait_registered()
    sc_url, sp_url = sc.admin_url, sp.admin_url
    up = 'edgerq_stream_bytes_total{direction="up",service="hash"}'
    down = 'edgerq_stream_bytes_total{direction="down",service="hash"}'
    sp_up = 'edgerq_stream_bytes_total{direction="up",service="svc0"}'
    sp_down = 'edgerq_stream_bytes_total{direction="down",service="svc0"}'

    def echo(sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        got = b""
        while len(got) < len(data):
            got += sock.recv(65536)
        assert got == data

    with connect(port) as sock:
        sock.sendall(b"ECHO\n")  # 5 bytes up; the service echoes what follows
        for size, total_up, total_down in ((995, 1000, 995), (500, 1500, 1495)):
            echo(sock, b"x" * size)
            metrics = get(f"{sc_url}/metrics")[1]
            assert (metric_value(metrics, up), metric_value(metrics, down)) == (
                total_up,
                total_down,
            )
            (service,) = json.loads(get(f"{sc_url}/status")[1])["services"]
            assert (service["bytes_up"], service["bytes_down"]) == (total_up, total_down)
            sp_metrics = get(f"{sp_url}/metrics")[1]
            assert (metric_value(sp_metrics, sp_up), metric_value(sp_metrics, sp_down)) == (
                total_up,
                total_down,
            )
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b"BYE\n"
    wait_for(
        lambda: (
            'edgerq_streams_total{outcome="ok",service="hash"} 1.0' in get(f"{sc_url}/metrics")[1]
        ),
        10,
        "the connection to end",
    )
    metrics = get(f"{sc_url}/metrics")[1]  # the rest counted once as it ended, none twice
    assert (metric_value(metrics, up), metric_value(metrics, down)) == (1500, 1499)


def test_status_counts_connections_waiting_for_a_slot_and_for_a_pipe(
    processes: Processes, backend: HashService
) -> None:
    """No SP yet and one slot: the first client holds the slot waiting for a pipe,
    the next two wait for the slot; an SP arriving serves all three in turn."""
    service = {"uuid": SERVICE_UUID, "name": "web", "port": 0, "max_connections": 1}
    sc = processes.start("sc", consumer_xml(0, [{**service, "request_ttl": 30}]))
    port = sc.service_port()

    def waiting() -> tuple[int, int, int]:
        (s,) = sc.status()["services"]
        return s["open"], s["waiting_for_slot"], s["waiting_for_pipe"]

    clients = [connect(port) for _ in range(3)]
    try:
        for client in clients:
            client.sendall(b"ECHO\n")
        wait_for(lambda: waiting() == (1, 2, 1), 10, "one holding the slot, two queued for it")
        out = subprocess.run(
            [sys.executable, "-m", "edgerq", "status", sc.admin_url],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert "1 open, 2 waiting for a slot, 1 waiting for a pipe," in out.stdout
        listener = sc.listener_port()
        processes.start("sp", provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)]))
        for client in clients:  # each served in turn as the slot passes on
            client.sendall(b"hello")
            got = b""
            while len(got) < 5:
                got += client.recv(100)
            assert got == b"hello"
            client.shutdown(socket.SHUT_WR)
            assert read_all(client) == b"BYE\n"
            client.close()
        wait_for(lambda: waiting() == (0, 0, 0), 10, "nobody left waiting")
    finally:
        for client in clients:
            client.close()
