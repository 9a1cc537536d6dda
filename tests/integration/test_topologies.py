"""Several pipes, several SPs, memory bounds and log formats."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import partial
from pathlib import Path

from edgerq.defaults import STREAM_WINDOW
from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    Tunnel,
    consumer_xml,
    provider_xml,
    wait_for,
    wait_steady,
)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_one_sp_with_pipes_to_two_scs(processes: Processes, backend: HashService) -> None:
    sc1 = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    sc2 = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    (l1, p1), (l2, p2) = ((sc.listener_port(), sc.service_port()) for sc in (sc1, sc2))
    processes.start(
        "sp",
        provider_xml(
            [(l1, [(SERVICE_UUID, backend.port)], None), (l2, [(SERVICE_UUID, backend.port)], None)]
        ),
    )
    sc1.wait_serving(timeout=30)
    sc2.wait_serving(timeout=30)
    assert download(p1, 300_000, 1) == sha256(payload(300_000, 1))
    assert download(p2, 300_000, 2) == sha256(payload(300_000, 2))


def stream_pipes(log: str) -> list[str]:
    """The pipe named in each of the SC's per-connection lines, in order."""
    return re.findall(r"(pipe \d+) '[^']*' \([^)]*\) stream \d+: client", log)


def test_two_sps_share_a_uuid_and_survivor_takes_over(
    processes: Processes, backend: HashService
) -> None:
    sc = processes.start("sc", consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    listener, port = sc.listener_port(), sc.service_port()
    xml = provider_xml([(listener, [(SERVICE_UUID, backend.port)], None)])
    sp1 = processes.start("sp", xml)
    processes.start("sp", xml)
    sc.wait_serving(pipes=2, timeout=30)
    # Streams are spread: connections held open at once go to the least busy pipe,
    # and the SC's line for each names the pipe it took.
    accepted = backend.accepted
    held = [connect(port) for _ in range(4)]
    for sock in held:
        sock.sendall(b"HOLD\n")
    wait_for(lambda: backend.accepted >= accepted + 4, 10, "four held connections")
    for sock in held:
        sock.close()
    wait_for(lambda: len(stream_pipes(sc.log)) >= 4, 10, "the SC's line for each")
    assert len(set(stream_pipes(sc.log))) == 2, stream_pipes(sc.log)
    for i in range(10):
        assert download(port, 10_000, i) == sha256(payload(10_000, i))
    sp1.kill()
    wait_for(lambda: sc.serving() == 1, 15, "the SC to withdraw the dead SP's pipe")
    for i in range(10):
        assert download(port, 10_000, i) == sha256(payload(10_000, i))


def test_stalled_reader_memory_is_bounded_by_the_window(tunnel: Tunnel) -> None:
    assert tunnel.sc.proc is not None and tunnel.sp.proc is not None
    before_sc, before_sp = rss_kib(tunnel.sc.proc.pid), rss_kib(tunnel.sp.proc.pid)
    stalled = connect(tunnel.service_port)
    stalled.sendall(f"DOWN {200 * 1024 * 1024} 5\n".encode())
    # Both daemons stop passing bytes on once the window is used up (an unbounded
    # buffer would instead keep taking the service's 200 MiB).
    down = 'edgerq_stream_bytes_total{direction="down",service="%s"}'
    for daemon, name in ((tunnel.sp, "svc0"), (tunnel.sc, "hash")):
        held = wait_steady(
            partial(daemon.metric, down % name),
            STREAM_WINDOW,
            30,
            f"the stalled stream to stop at the {daemon.command}",
        )
        assert held < 50 * 1024 * 1024, f"{daemon.command} took {held} bytes for a stalled reader"
    grown_sc = rss_kib(tunnel.sc.proc.pid) - before_sc
    grown_sp = rss_kib(tunnel.sp.proc.pid) - before_sp
    stalled.close()
    # One stream window is 1 MiB; allow for allocator slack, never the 200 MiB.
    assert grown_sc < 16 * 1024, f"SC grew by {grown_sc} KiB for one stalled stream"
    assert grown_sp < 16 * 1024, f"SP grew by {grown_sp} KiB for one stalled stream"


def test_json_log_lines(processes: Processes, backend: HashService, tmp_path: Path) -> None:
    config = tmp_path / "json-sc.xml"
    config.write_text(consumer_xml(0, [{"uuid": SERVICE_UUID, "port": 0}]))
    out = subprocess.run(
        [sys.executable, "-m", "edgerq", "check", str(config), "--log-format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "configuration is valid" in out.stdout
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgerq", "--log-format", "json", "sc", str(config)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    first = json.loads(proc.stderr.readline())
    while "accepting pipes" not in json.loads(proc.stderr.readline())["msg"]:
        pass
    proc.terminate()
    proc.wait(timeout=10)
    proc.stderr.close()
    assert proc.returncode == 0
    assert first["level"] == "info" and "starting" in first["msg"]
