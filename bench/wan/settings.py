"""What the WAN bench measures: the link profiles, the carriers, how long each phase runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.wan.linkemu import LinkProfile

LINK_RATE_MBIT = 50.0
"""Every profile's bottleneck, each way: a WAN has one, and 50 Mbit/s stays
well under what the emulator and both carriers can move on this machine, so the
figures measure the path, not a CPU."""

PROFILES = {
    "rtt40": LinkProfile.symmetric("rtt40", 40.0, rate_mbit=LINK_RATE_MBIT),
    "rtt40-loss1": LinkProfile.symmetric("rtt40-loss1", 40.0, 0.01, rate_mbit=LINK_RATE_MBIT),
    "rtt80-loss3": LinkProfile.symmetric("rtt80-loss3", 80.0, 0.03, rate_mbit=LINK_RATE_MBIT),
    "rtt150-loss1-jitter": LinkProfile.symmetric(
        "rtt150-loss1-jitter", 150.0, 0.01, jitter_ms=5.0, rate_mbit=LINK_RATE_MBIT
    ),
}
PROFILE_TITLES = {
    "rtt40": "RTT 40 ms, no loss",
    "rtt40-loss1": "RTT 40 ms, 1 % loss",
    "rtt80-loss3": "RTT 80 ms, 3 % loss",
    "rtt150-loss1-jitter": "RTT 150 ms ± 5 ms jitter, 1 % loss",
}
CARRIERS = ("tcp", "tcp-stunnel", "udp")
CARRIER_TITLES = {"tcp": "tcp", "tcp-stunnel": "tcp + stunnel", "udp": "udp (QUIC)"}
QUICK_PROFILES = ("rtt40-loss1", "rtt80-loss3")


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs."""

    small_s: float
    transfer_bytes: int
    transfer_limit_s: float
    blackout_s: float
    first_byte_samples: int
    recovery_limit_s: float = 30.0


FULL = Plan(
    small_s=12.0,
    transfer_bytes=20 << 20,
    transfer_limit_s=25.0,
    blackout_s=5.0,
    first_byte_samples=10,
)
QUICK = replace(
    FULL,
    small_s=2.5,
    transfer_limit_s=4.0,
    blackout_s=3.0,
    first_byte_samples=3,
    recovery_limit_s=20.0,
)
