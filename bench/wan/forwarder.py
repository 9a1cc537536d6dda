"""The link emulator's forwarder: ``python -m bench.wan.forwarder SC_NS SP_NS PROFILE [SEED]``,
started (and fed commands on stdin) by ``bench.wan.linkemu.LinkEmulator``.

One thread: both TUN devices and the control pipe in one ``select`` with
microsecond timeouts, a heap of packets ordered by due time, timer slack 1 µs
and ``SCHED_FIFO`` when allowed. Each direction applies its ``Direction``:
delay, jitter, loss (random or bursty), a rate limit with a bounded queue,
reordering; a blackout drops everything both ways.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

from bench.wan.linkemu import TUN_NAME, Direction, LinkProfile, in_namespace

_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000
_PR_SET_TIMERSLACK = 29
_BATCH = 256  # packets read from one device before looking at the other and the heap


@dataclass
class _Way:
    """One direction's settings and state inside the forwarder."""

    name: str
    out_fd: int
    setting: Direction
    rng: random.Random
    busy_until: int = 0  # ns: the bottleneck is sending until then
    last_due: int = 0  # ns: the latest due time handed out (keeps packets in order)
    bad: bool = False  # Gilbert-Elliott state
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "received",
                "sent",
                "lost",
                "queue_full",
                "blackout",
                "write_failed",
                "not_ipv4",
                "reordered",
            ),
            0,
        )
    )

    def lost(self) -> bool:
        ge = self.setting.burst
        if ge is None:
            return self.setting.loss > 0 and self.rng.random() < self.setting.loss
        if self.bad:
            self.bad = self.rng.random() >= ge.r
        else:
            self.bad = self.rng.random() < ge.p
        chance = ge.loss_bad if self.bad else ge.loss_good
        return chance > 0 and self.rng.random() < chance

    def due(self, now: int, size: int) -> int | None:
        """When a packet of ``size`` bytes received at ``now`` leaves; None: dropped."""
        s = self.setting
        depart = now
        if s.rate_mbit > 0:
            start = max(now, self.busy_until)
            if start - now > s.queue_ms * 1e6:
                self.counts["queue_full"] += 1
                return None
            self.busy_until = start + int(size * 8e3 / s.rate_mbit)
            depart = self.busy_until
        if self.lost():
            self.counts["lost"] += 1
            return None
        delay = s.delay_ms
        if s.jitter_ms > 0:
            delay += max(-2.0, min(2.0, self.rng.gauss(0.0, 1.0))) * s.jitter_ms
        due = depart + int(max(0.0, delay) * 1e6)
        if s.reorder > 0 and self.rng.random() < s.reorder:
            self.counts["reordered"] += 1
            return max(due, self.last_due) + int(s.reorder_ms * 1e6)
        due = max(due, self.last_due)
        self.last_due = due
        return due


class Forwarder:
    """The event loop: both TUN devices, the control pipe, a heap of packets by due time."""

    def __init__(self, sc_fd: int, sp_fd: int, profile: LinkProfile, seed: int | None) -> None:
        rng = random.Random(seed)
        self.fds = (sc_fd, sp_fd)
        # a packet read from the SC's device goes SC -> SP, out of the SP's device
        self.ways = {
            sc_fd: _Way("sc_to_sp", sp_fd, profile.sc_to_sp, random.Random(rng.random())),
            sp_fd: _Way("sp_to_sc", sc_fd, profile.sp_to_sc, random.Random(rng.random())),
        }
        self.profile = profile
        self.heap: list[tuple[int, int, int, bytes]] = []
        self.seq = 0
        self.blackout_until = 0
        self.realtime = False
        self.started = time.monotonic_ns()

    def set_profile(self, profile: LinkProfile) -> None:
        self.profile = profile
        self.ways[self.fds[0]].setting = profile.sc_to_sp
        self.ways[self.fds[1]].setting = profile.sp_to_sc

    def ingress(self, fd: int, now: int) -> None:
        way = self.ways[fd]
        heap, counts = self.heap, way.counts
        for _ in range(_BATCH):
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            counts["received"] += 1
            if not packet or packet[0] >> 4 != 4:
                counts["not_ipv4"] += 1
                continue
            if now < self.blackout_until:
                counts["blackout"] += 1
                continue
            due = way.due(now, len(packet))
            if due is None:
                continue
            self.seq += 1
            heapq.heappush(heap, (due, self.seq, way.out_fd, packet))

    def egress(self, now: int) -> None:
        heap = self.heap
        while heap and heap[0][0] <= now:
            _, _, out_fd, packet = heapq.heappop(heap)
            way = self.ways[self.fds[1] if out_fd == self.fds[0] else self.fds[0]]
            try:
                os.write(out_fd, packet)
                way.counts["sent"] += 1
            except OSError:
                way.counts["write_failed"] += 1

    def stats(self) -> dict[str, Any]:
        return {
            "realtime": self.realtime,
            "queued": len(self.heap),
            "uptime_s": round((time.monotonic_ns() - self.started) / 1e9, 3),
            **{w.name: dict(w.counts) for w in self.ways.values()},
        }

    def control(self, line: str, out: IO[str]) -> bool:
        """One command (a JSON line); answers one JSON line. False: stop."""
        try:
            command = json.loads(line)
            op = command["op"]
            if op == "stats":
                answer: dict[str, Any] = self.stats()
            elif op == "set":
                self.set_profile(LinkProfile.from_json(command["profile"]))
                answer = {"ok": True}
            elif op == "blackout":
                now = time.monotonic_ns()
                self.blackout_until = now + int(float(command["seconds"]) * 1e9)
                answer = {"from": now / 1e9, "until": self.blackout_until / 1e9}
            elif op == "quit":
                return False
            else:
                answer = {"error": f"unknown op {op!r}"}
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"error": str(exc)}
        out.write(json.dumps(answer) + "\n")
        out.flush()
        return True

    def run(self, control_fd: int, out: IO[str]) -> None:
        readable = [*self.fds, control_fd]
        pending = b""
        heap = self.heap
        while True:
            timeout = None
            if heap:
                timeout = max(0.0, (heap[0][0] - time.monotonic_ns()) / 1e9)
            ready, _, _ = select.select(readable, [], [], timeout)
            now = time.monotonic_ns()
            # send what is due first: its time is already here
            self.egress(now)
            for fd in ready:
                if fd == control_fd:
                    chunk = os.read(control_fd, 65536)
                    if not chunk:
                        return
                    pending += chunk
                    while b"\n" in pending:
                        line, pending = pending.split(b"\n", 1)
                        if line.strip() and not self.control(line.decode(), out):
                            return
                else:
                    self.ingress(fd, now)
            self.egress(time.monotonic_ns())


def open_tun(namespace: str, name: str = TUN_NAME) -> int:
    """Create TUN device ``name`` in ``namespace``; returns its non-blocking fd."""
    with in_namespace(namespace):
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH22x", name.encode(), _IFF_TUN | _IFF_NO_PI))
    return fd


def main(argv: list[str]) -> int:
    sc_ns, sp_ns, profile_json = argv[:3]
    seed = int(argv[3]) if len(argv) > 3 else None
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when it ends
    with contextlib.suppress(OSError):
        ctypes.CDLL(None).prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0)
    forwarder = Forwarder(
        open_tun(sc_ns), open_tun(sp_ns), LinkProfile.from_json(json.loads(profile_json)), seed
    )
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
        forwarder.realtime = True
    except (OSError, AttributeError):
        with contextlib.suppress(OSError):
            os.nice(-10)
    print(json.dumps({"ready": True, "realtime": forwarder.realtime}), flush=True)
    forwarder.run(sys.stdin.fileno(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
