"""A compromised SC cannot make an SP hold more than its own bounds (issue 12, finding 1).

The hostile SC completes the handshake honestly, then opens many streams at
once to a listed service that never reads, each asking for a window of
2^32-1, and sends DATA as fast as the socket takes it. The SP's peak RSS is
sampled from /proc during the attack and must stay within the bound
``docs/scaling.md`` states (``pipe_buffer`` per pipe, plus a fixed slack for
the interpreter's own buffers) above its RSS before the attack; the SP must
say so (a log line, ``edgerq_limit_hits_total``) and end the pipe with
GOAWAY; a legitimate stream through another SC on another pipe of the same SP
keeps working meanwhile.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerq import defaults
from edgerq.protocol.messages import GoawayCode
from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import upload
from tests.integration.conftest import (
    SERVICE_UUID,
    Processes,
    carrier_settings,
    consumer_xml,
    free_port,
    provider_xml,
)
from tests.integration.fake_peer import HostileConsumer, QuicHostileConsumer
from tests.integration.test_limits import metric

MIB = 1024 * 1024
SLACK = 64 * MIB
"""RSS the SP may add beyond what it holds for the pipe: the pipe's read and frame
buffers, qh3's, the interpreter's allocator slack (measured: up to 27 MiB on a
loaded machine)."""
ATTACK_SECONDS = 40.0
ATTACK_BYTES = 400 * MIB


class SinkService:
    """A service that accepts connections and never reads from them; or, with
    ``accept=False``, one that never even accepts them (its backlog full, further
    connects hang until the SP's connect timeout, and the SP holds what arrives)."""

    def __init__(self, accept: bool = True) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024 if accept else 0)
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        if accept:
            threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.listener.accept()
                # A small receive buffer: what the kernel takes is not what is measured.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                self.accepted.append(sock)

    def close(self) -> None:
        self.listener.close()
        for sock in self.accepted:
            sock.close()


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[SinkService]:
    service = SinkService(accept=getattr(request, "param", True))
    yield service
    service.close()


def rss(pid: int) -> int:
    """The process's resident set size in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakSampler:
    """Samples a process's RSS every few milliseconds in a thread; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            with contextlib.suppress(OSError, AssertionError):
                self.peak = max(self.peak, rss(self.pid))

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.parametrize(
    ("carrier", "mode", "sink", "streams", "per_stream", "limit"),
    [
        # Ignores the windows, to a service that does not read: only the SP's own
        # window stops each stream.
        ("tcp", "overrun", True, 64, ATTACK_BYTES, "stream_window"),
        ("udp", "overrun", True, 64, ATTACK_BYTES, "stream_window"),
        # Stays inside a 1 MiB window on every stream but opens 256 of them, to a
        # service the SP cannot reach yet (so the SP holds every byte): only the
        # pipe's budget stops it.
        ("tcp", "within-windows", False, 256, defaults.STREAM_WINDOW, "pipe_buffer"),
    ],
    indirect=["sink"],
)
def test_hostile_sc_cannot_exhaust_the_sp(
    processes: Processes,
    backend: HashService,
    sink: SinkService,
    tmp_path: Path,
    carrier: str,
    mode: str,
    streams: int,
    per_stream: int,
    limit: str,
) -> None:
    hostile: HostileConsumer | QuicHostileConsumer
    hostile_extra = ""
    if carrier == "udp":
        _, hostile_extra = carrier_settings("udp", tmp_path)
        hostile = QuicHostileConsumer(tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem", b"s3cret")
    else:
        hostile = HostileConsumer(b"s3cret")
    # A legitimate SC on another pipe of the same SP.
    listener, service_port = free_port(), free_port()
    sc = processes.start(
        "sc",
        consumer_xml(
            listener,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": service_port}],
            token="s3cret",
        ),
    )
    sc.wait_log("accepting pipes")
    admin = free_port()
    sp = processes.start(
        "sp",
        provider_xml(
            [
                (hostile.port, [(SERVICE_UUID, sink.port)], "s3cret"),
                (listener, [(SERVICE_UUID, backend.port)], "s3cret"),
            ],
            extra=f"<admin><port>{admin}</port></admin>",
        ).replace("<name>pipe1</name>", f"<name>pipe1</name>{hostile_extra}", 1),
    )
    try:
        assert hostile.accept() == [SERVICE_UUID]
        sc.wait_log("now serve it", timeout=30)
        assert sp.proc is not None
        time.sleep(0.5)  # let the SP settle after both registrations
        baseline = rss(sp.proc.pid)

        legit: dict[str, str] = {}
        data = payload(4 * MIB, 7)

        def legitimate_upload() -> None:
            legit["hash"] = upload(service_port, data)

        with PeakSampler(sp.proc.pid) as sampler:
            client = threading.Thread(target=legitimate_upload)
            client.start()
            sent = hostile.flood(
                SERVICE_UUID,
                streams,
                per_stream,
                ATTACK_BYTES,
                time.monotonic() + ATTACK_SECONDS,
            )
            client.join(timeout=60)
            # The SP ends the pipe once the peer keeps breaking its bounds.
            hostile.closed.wait(timeout=15)
        peak = sampler.peak - baseline
        print(
            f"\n{carrier} {mode}: {streams} streams, {sent / MIB:.0f} MiB sent; SP RSS baseline "
            f"{baseline / MIB:.0f} MiB, peak {sampler.peak / MIB:.0f} MiB "
            f"(+{peak / MIB:.0f} MiB; bound pipe_buffer {defaults.PIPE_BUFFER // MIB} MiB "
            f"+ slack {SLACK // MIB} MiB)"
        )
        assert peak <= defaults.PIPE_BUFFER + SLACK, (
            f"the SP grew by {peak / MIB:.0f} MiB under the hostile SC"
        )
        assert hostile.reset_streams, "the SP reset no stream"
        if isinstance(hostile, HostileConsumer):
            assert hostile.goaway is not None, "the SP did not end the pipe with GOAWAY"
            assert hostile.goaway.code == GoawayCode.LIMIT_EXCEEDED, hostile.goaway
            ended = hostile.goaway.reason
        else:
            assert "SP closed the pipe" in hostile.close_reason, hostile.close_reason
            ended = hostile.close_reason
        sp.wait_log("reset:", timeout=10)
        sp.wait_log("violation 1 of", timeout=10)
        assert metric(admin, "edgerq_limit_hits_total", f'{{limit="{limit}"}}') >= 1
        # Ended after 16 resets; or, over udp, for the incomplete frames the
        # overrunning streams left waiting in their decoders (pipe_buffer) first.
        if "incomplete frames" in ended:
            assert carrier == "udp", ended
            assert metric(admin, "edgerq_limit_hits_total", '{limit="pipe_buffer"}') >= 1
        else:
            assert "overran" in ended, ended
            repeated = metric(admin, "edgerq_limit_hits_total", '{limit="repeated_violations"}')
            assert repeated == 1
        assert legit.get("hash") == sha256(data), "the legitimate stream was disturbed"
    finally:
        hostile.close()


class SpewService:
    """A service that sends zeros to every connection as fast as it is read."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = int(self.listener.getsockname()[1])
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                sock, _ = self.listener.accept()
                self.sockets.append(sock)
                threading.Thread(target=self._spew, args=(sock,), daemon=True).start()

    @staticmethod
    def _spew(sock: socket.socket) -> None:
        chunk = bytes(1 << 20)
        with contextlib.suppress(OSError):
            while True:
                sock.sendall(chunk)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_an_sc_that_grants_credit_but_withholds_quics_cannot_make_the_sp_buffer(
    processes: Processes, tmp_path: Path
) -> None:
    """The other direction, over udp: the SC grants stream credit of 1 GiB on 16
    streams to a service that sends without end, then stops acknowledging
    anything at the QUIC level (its event loop frozen). The SP must stop reading
    the service once qh3 holds SEND_HIGH_WATER unsent (before: +2.4 GiB; after: +10 MiB)."""
    _, pipe_extra = carrier_settings("udp", tmp_path)
    hostile = QuicHostileConsumer(tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem", b"s3cret")
    spew = SpewService()
    sp = processes.start(
        "sp", provider_xml([(hostile.port, [(SERVICE_UUID, spew.port)], "s3cret")], pipe_extra)
    )
    try:
        assert hostile.accept() == [SERVICE_UUID]
        assert sp.proc is not None
        time.sleep(0.5)
        baseline = rss(sp.proc.pid)
        with PeakSampler(sp.proc.pid) as sampler:
            hostile.grant_and_freeze(SERVICE_UUID, streams=16, credit=1 << 30, seconds=6.0)
        peak = sampler.peak - baseline
        print(
            f"\nudp credit without acks: SP RSS baseline {baseline / MIB:.0f} MiB, peak "
            f"{sampler.peak / MIB:.0f} MiB (+{peak / MIB:.0f} MiB)"
        )
        assert peak <= defaults.PIPE_BUFFER + SLACK, (
            f"the SP grew by {peak / MIB:.0f} MiB holding what the service sent"
        )
        assert sp.proc.poll() is None
    finally:
        hostile.close()
        spew.close()


def test_incomplete_frames_on_many_udp_streams_count_against_the_pipe_buffer(
    processes: Processes, sink: SinkService, tmp_path: Path
) -> None:
    """Over udp every stream has a frame decoder of its own: an SC that leaves an
    incomplete 1 MiB DATA frame on each of 256 streams made the SP hold them all
    (+261 MiB). They now count against ``pipe_buffer``; past it the pipe is ended."""
    _, pipe_extra = carrier_settings("udp", tmp_path)
    hostile = QuicHostileConsumer(tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem", b"s3cret")
    admin = free_port()
    sp = processes.start(
        "sp",
        provider_xml(
            [(hostile.port, [(SERVICE_UUID, sink.port)], "s3cret")],
            pipe_extra,
            extra=f"<admin><port>{admin}</port></admin>",
        ),
    )
    try:
        assert hostile.accept() == [SERVICE_UUID]
        assert sp.proc is not None
        time.sleep(0.5)
        baseline = rss(sp.proc.pid)
        with PeakSampler(sp.proc.pid) as sampler:
            hostile.incomplete_frames(SERVICE_UUID, streams=256, seconds=3.0)
        peak = sampler.peak - baseline
        print(
            f"\nudp incomplete frames: SP RSS baseline {baseline / MIB:.0f} MiB, peak "
            f"{sampler.peak / MIB:.0f} MiB (+{peak / MIB:.0f} MiB)"
        )
        assert peak <= defaults.PIPE_BUFFER + SLACK, f"the SP grew by {peak / MIB:.0f} MiB"
        assert hostile.closed.wait(10), "the SP did not end the pipe"
        assert "pipe_buffer" in hostile.close_reason, hostile.close_reason
        sp.wait_log("incomplete frames on", timeout=10)
        assert metric(admin, "edgerq_limit_hits_total", '{limit="pipe_buffer"}') >= 1
    finally:
        hostile.close()
