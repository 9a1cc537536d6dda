"""A flood at the SC's udp pipe port is counted by reason and summed up in a few
log lines, and a legitimate pipe keeps working through it (issue 12, finding 3)."""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import time
from pathlib import Path

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import upload
from tests.integration.conftest import Processes, start_tunnel, wait_for
from tests.integration.test_limits import metric

DROPPED = "edgerq_udp_datagrams_dropped_total"
SUMMARY = re.compile(r"udp pipe port \d+: dropped (\d+) datagram")
SUMMARY_INTERVAL = 10.0  # edgerq.carriers.drop_report.SUMMARY_INTERVAL


def long_header(first: int, version: int, token: bytes | None, size: int) -> bytes:
    """A long-header packet: random connection ids, a token field for Initials."""
    header = bytes([first]) + struct.pack(">I", version)
    header += bytes([8]) + os.urandom(8) + bytes([8]) + os.urandom(8)
    if token is not None:
        header += bytes([len(token)]) + token  # one-byte varint: tokens under 64 bytes
    rest = size - len(header) - 2
    return header + struct.pack(">H", 0x4000 | rest) + os.urandom(rest)


def flood() -> dict[str, list[bytes]]:
    """What each reason should see, a few hundred datagrams each."""
    return {
        "too_short": [os.urandom(n % 28 + 1) for n in range(500)],
        "bad_header": [bytes([0x00]) + os.urandom(99) for _ in range(500)],  # fixed bit clear
        "unsupported_version": [long_header(0xC0, 0x1A2A3A4A, b"", 1200) for _ in range(300)],
        "initial_too_small": [long_header(0xC0, 1, b"", 300) for _ in range(500)],
        "retry": [long_header(0xC0, 1, b"", 1200) for _ in range(500)],
        "bad_token": [long_header(0xC0, 1, os.urandom(40), 1200) for _ in range(500)],
        "unknown_connection": [
            *(bytes([0x40]) + os.urandom(60) for _ in range(500)),  # short header
            *(long_header(0xE0, 1, None, 200) for _ in range(300)),  # Handshake
        ],
    }


def test_a_flood_at_the_udp_pipe_port_is_counted_and_summed_up(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    tunnel = start_tunnel(processes, backend, "udp", tmp_path, admin=True)
    assert tunnel.sc_admin is not None
    admin = int(tunnel.sc_admin.rsplit(":", 1)[1])
    data = payload(300_000)
    assert upload(tunnel.service_port, data) == sha256(data)

    sent = flood()
    total = sum(len(d) for d in sent.values())
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for round_ in range(4):  # interleaved, with a tunneled request between rounds
            for datagrams in sent.values():
                for datagram in datagrams[round_::4]:
                    sock.sendto(datagram, ("127.0.0.1", tunnel.listener_port))
                time.sleep(0.01)  # let the SC read: the flood is counted, not lost in the kernel
            assert upload(tunnel.service_port, data) == sha256(data)
    flood_seconds = time.monotonic() - started

    counts = {}
    for reason, datagrams in sent.items():
        counts[reason] = metric(admin, DROPPED, f'{{reason="{reason}"}}')
        # Loopback can drop a datagram under load; the reason must still be seen.
        assert counts[reason] >= len(datagrams) // 2, (reason, counts)
    assert sum(counts.values()) <= total + 3  # + the legitimate pipe's Retry (one per dial)
    print(f"sent {total} datagrams in {flood_seconds:.1f} s; dropped by reason: {counts}")

    # The summary lines add up to the metric once the last interval is flushed.
    def summed() -> int:
        return sum(int(n) for n in SUMMARY.findall(tunnel.sc.log))

    wait_for(lambda: summed() >= sum(counts.values()) - 3, SUMMARY_INTERVAL + 15, "summary lines")
    lines = SUMMARY.findall(tunnel.sc.log)
    print(f"{len(lines)} summary line(s): {lines}")
    # One at the first drop, one per interval while drops went on, one for the tail.
    assert len(lines) <= 2 + math.ceil(flood_seconds / SUMMARY_INTERVAL)
    assert upload(tunnel.service_port, data) == sha256(data)  # the pipe is still up
    assert tunnel.sc.log.count("authenticated") == 1  # and it is the same pipe
