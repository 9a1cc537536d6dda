"""The WAN link emulator (bench/wan/linkemu.py) is faithful to its settings.

This asserts the emulator's own fidelity, never a figure of the tunnel: UDP
round trips between the two namespaces match the configured delay, and the
share of datagrams that go missing matches the configured loss, within the
tolerances stated beside each assertion. Skipped, with the reason, where
network namespaces or TUN devices cannot be had (not Linux, not root, no
/dev/net/tun, no iproute2).
"""

from __future__ import annotations

import math
import select
import socket
import statistics
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from bench.wan.linkemu import (
    SC_ADDR,
    SP_ADDR,
    Direction,
    GilbertElliott,
    LinkEmulator,
    LinkProfile,
    in_namespace,
    why_unavailable,
)

_REASON = why_unavailable()
pytestmark = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")

PORT = 9000
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


@dataclass
class Ends:
    link: LinkEmulator
    sc: socket.socket  # bound in the SC's namespace
    sp: socket.socket  # bound in the SP's namespace

    def drain(self, sock: socket.socket, quiet: float) -> list[bytes]:
        """Everything that arrives on ``sock`` until it has been silent for ``quiet`` s."""
        got = []
        while select.select([sock], [], [], quiet)[0]:
            got.append(sock.recv(65536))
        return got


@pytest.fixture
def ends(request: pytest.FixtureRequest) -> Iterator[Ends]:
    profile: LinkProfile = request.param
    with LinkEmulator(profile, tag="t", seed=1234) as link:
        socks = []
        for ns, addr in ((link.sc_ns, SC_ADDR), (link.sp_ns, SP_ADDR)):
            with in_namespace(ns):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 16 << 20)
            # the kernel stamps each datagram's arrival: the figures do not
            # depend on when this (unprivileged, busy) test process wakes up
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            sock.bind((addr, PORT))
            socks.append(sock)
        try:
            yield Ends(link, socks[0], socks[1])
        finally:
            for sock in socks:
                sock.close()


def received(sock: socket.socket, timeout: float) -> tuple[bytes, int] | None:
    """The next datagram and the kernel's arrival time (ns, CLOCK_REALTIME), or None."""
    if not select.select([sock], [], [], timeout)[0]:
        return None
    data, ancillary, _, _ = sock.recvmsg(65536, 64)
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = struct.unpack("qq", value[:16])
            return data, seconds * 1_000_000_000 + nanoseconds
    raise AssertionError("no SO_TIMESTAMPNS on a received datagram")


def one_way(sender: socket.socket, receiver: socket.socket, message: bytes) -> float:
    """Milliseconds from just before ``sendto`` to the kernel's arrival stamp."""
    sent = time.time_ns()
    sender.sendto(message, receiver.getsockname())
    got = received(receiver, 2.0)
    assert got is not None, "datagram lost on a lossless link"
    assert got[0] == message
    return (got[1] - sent) / 1e6


def round_trips(ends: Ends, count: int, gap: float) -> list[float]:
    """Milliseconds for ``count`` UDP echoes SC -> SP -> SC (each way timed on its own)."""
    rtts = []
    for i in range(count):
        message = i.to_bytes(4, "big") + bytes(60)
        rtts.append(one_way(ends.sc, ends.sp, message) + one_way(ends.sp, ends.sc, message))
        time.sleep(gap)
    return rtts


ASYMMETRIC = LinkProfile("asym", Direction(delay_ms=30.0), Direction(delay_ms=10.0))


@pytest.mark.parametrize("ends", [ASYMMETRIC], indirect=True)
def test_round_trip_matches_the_configured_delay(ends: Ends) -> None:
    rtts = sorted(round_trips(ends, 60, 0.005))
    configured = 40.0
    median = statistics.median(rtts)
    print(f"\nRTT configured {configured} ms: min {rtts[0]:.2f}, median {median:.2f} ms")
    # Never early: a packet is not sent before its due time (0.05 ms for clock reads).
    assert rtts[0] >= configured - 0.05
    # Median within 2 ms above the setting: the forwarder's wake-ups and the
    # host's load count against the emulator here.
    assert median <= configured + 2.0


JITTERY = LinkProfile.symmetric("jitter", rtt_ms=40.0, jitter_ms=4.0)


@pytest.mark.parametrize("ends", [JITTERY], indirect=True)
def test_jitter_spreads_round_trips_as_configured(ends: Ends) -> None:
    rtts = round_trips(ends, 100, 0.005)
    # Each way adds N(0, 4 ms) cut at ±2 sigma (std 0.88 sigma): the RTT's std is
    # sqrt(2) * 0.88 * 4 ms = 5.0 ms. Stated tolerance: median within 3 ms of
    # 40 ms (2 ms as above, plus the median of 100 draws of std 5 ms varying by
    # about 0.6 ms), std within ±40 % (100 samples; the host's noise adds to it).
    expected_std = math.sqrt(2) * 0.8796 * 4.0
    median, std = statistics.median(rtts), statistics.stdev(rtts)
    print(
        f"\nRTT 40 ms ± jitter: median {median:.2f} ms, std {std:.2f} (expected {expected_std:.2f})"
    )
    assert abs(median - 40.0) <= 3.0
    assert 0.6 * expected_std <= std <= 1.4 * expected_std


def send_numbered(ends: Ends, count: int, size: int = 100, burst: int = 100) -> set[int]:
    """Send ``count`` numbered datagrams SC -> SP (in bursts); the numbers that arrived."""
    for start in range(0, count, burst):
        for i in range(start, min(count, start + burst)):
            ends.sc.sendto(i.to_bytes(4, "big") + bytes(size - 4), (SP_ADDR, PORT))
        time.sleep(0.002)
    return {int.from_bytes(d[:4], "big") for d in ends.drain(ends.sp, 0.3)}


def binomial_band(n: int, p: float, sigmas: float = 4.0) -> tuple[float, float]:
    half = sigmas * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


LOSSY = LinkProfile("lossy", Direction(loss=0.10), Direction())


@pytest.mark.parametrize("ends", [LOSSY], indirect=True)
def test_random_loss_matches_the_configured_rate(ends: Ends) -> None:
    n = 4000
    arrived = send_numbered(ends, n)
    measured = 1 - len(arrived) / n
    low, high = binomial_band(n, 0.10)
    counts = ends.link.stats()["sc_to_sp"]
    print(f"\nloss configured 10 %: measured {measured:.2%} (band {low:.2%}-{high:.2%})")
    # Binomial: within 4 standard deviations of 10 % (±1.9 points for 4000).
    assert low <= measured <= high
    # And nothing lost besides what the emulator chose to drop.
    assert counts["received"] >= n
    assert n - len(arrived) == counts["lost"]


BURSTY = LinkProfile("bursty", Direction(burst=GilbertElliott.from_mean(0.05, 4.0)), Direction())


@pytest.mark.parametrize("ends", [BURSTY], indirect=True)
def test_bursty_loss_matches_its_mean_and_burst_length(ends: Ends) -> None:
    n = 6000
    arrived = send_numbered(ends, n)
    lost = {i for i in range(n) if i not in arrived}
    bursts = sum(1 for i in lost if i - 1 not in lost)
    mean_burst = len(lost) / max(1, bursts)
    measured = len(lost) / n
    print(
        f"\nbursty loss 5 % in bursts of 4: measured {measured:.2%}, "
        f"mean burst {mean_burst:.2f} packets"
    )
    # About 75 bursts in 6000 packets: the count of bursts varies like a
    # Poisson draw (±23 % at 2 sigma), so the stated tolerance is generous: mean
    # loss 2.5-7.5 %, mean burst length 2.5-6 packets.
    assert 0.025 <= measured <= 0.075
    assert 2.5 <= mean_burst <= 6.0


RATED = LinkProfile("rated", Direction(rate_mbit=20.0, queue_ms=2000.0), Direction())


@pytest.mark.parametrize("ends", [RATED], indirect=True)
def test_rate_limit_paces_packets(ends: Ends) -> None:
    n, size = 1500, 1000
    for i in range(n):
        ends.sc.sendto(i.to_bytes(4, "big") + bytes(size - 4), (SP_ADDR, PORT))
        if i % 100 == 99:
            time.sleep(0.001)
    stamps = []
    while (got := received(ends.sp, 0.5)) is not None:
        stamps.append(got[1])
    assert len(stamps) == n, f"{n - len(stamps)} datagrams lost with no loss and a 2 s queue"
    ip_bits = (n - 1) * (size + 28) * 8
    rate = ip_bits / ((stamps[-1] - stamps[0]) / 1e9) / 1e6
    print(f"\nrate configured 20 Mbit/s: measured {rate:.2f} Mbit/s")
    # Stated tolerance: ±10 % of the configured rate, from the receiver's kernel stamps.
    assert 18.0 <= rate <= 22.0
