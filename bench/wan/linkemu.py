"""A WAN link on one machine: two network namespaces joined by TUN devices.

``tc netem`` is not available here, so the link is emulated in user space::

    namespace SC                 root namespace                 namespace SP
    10.201.0.1 ─ tun ═══════════ forwarder process ═══════════ tun ─ 10.201.0.2

The forwarder (``bench.wan.forwarder``, a process of its own) moves whole
IPv4 packets between the two TUN devices and applies, for each direction on
its own: a one-way delay, jitter, random loss or bursty (Gilbert-Elliott)
loss, a rate limit with a bounded queue, and reordering. Real kernel TCP and
real UDP run end to end through it.

Accuracy: one thread, one ``select`` with microsecond timeouts over both TUN
devices and the control pipe, a heap of packets ordered by due time, timer
slack set to 1 µs, and (when allowed) ``SCHED_FIFO`` so that a loaded machine
does not delay the wake-ups. Packets are read in batches until the device is
empty. No packet is ever sent before its due time.

Use :class:`LinkEmulator` as a context manager (it makes and always removes
the namespaces); run a process in a namespace with :meth:`LinkEmulator.prefix`,
or make a socket there from this process with :func:`in_namespace`.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SC_ADDR = "10.201.0.1"
SP_ADDR = "10.201.0.2"
TUN_NAME = "erqwan"
MTU = 1500
NS_PREFIX = "erq-wan-"
_CLONE_NEWNET = 0x40000000


# --- link settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class GilbertElliott:
    """Bursty loss: a two-state Markov chain stepped once per packet.

    ``p``: probability of moving good -> bad; ``r``: bad -> good. A packet is
    lost with ``loss_bad`` in the bad state and ``loss_good`` in the good one.
    """

    p: float
    r: float
    loss_bad: float = 1.0
    loss_good: float = 0.0

    @classmethod
    def from_mean(cls, loss: float, burst: float) -> GilbertElliott:
        """Every packet lost in the bad state, none in the good one: ``loss`` on
        average, in bursts of ``burst`` packets on average."""
        r = 1.0 / burst
        return cls(p=loss * r / (1.0 - loss), r=r)

    @property
    def mean_loss(self) -> float:
        bad = self.p / (self.p + self.r)
        return bad * self.loss_bad + (1.0 - bad) * self.loss_good


@dataclass(frozen=True)
class Direction:
    """What the link does to the packets going one way."""

    delay_ms: float = 0.0
    """One-way propagation delay."""
    jitter_ms: float = 0.0
    """Standard deviation of a normal variation of the delay (cut at ±2 sigma, never
    below zero). Packets stay in order, as on one physical path."""
    loss: float = 0.0
    """Probability that a packet is dropped, independently of the others."""
    burst: GilbertElliott | None = None
    """Bursty loss instead of ``loss`` when set."""
    rate_mbit: float = 0.0
    """Bottleneck rate in Mbit/s (IP bytes); 0 for none."""
    queue_ms: float = 50.0
    """The bottleneck's buffer, in milliseconds at ``rate_mbit``; tail drop beyond it."""
    reorder: float = 0.0
    """Probability that a packet is held ``reorder_ms`` longer, letting later ones pass."""
    reorder_ms: float = 2.0

    @property
    def mean_loss(self) -> float:
        return self.burst.mean_loss if self.burst is not None else self.loss

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Direction:
        burst = data.get("burst")
        return cls(**{**data, "burst": GilbertElliott(**burst) if burst else None})


@dataclass(frozen=True)
class LinkProfile:
    """Both directions of a link: SC -> SP and SP -> SC."""

    name: str
    sc_to_sp: Direction = field(default_factory=Direction)
    sp_to_sc: Direction = field(default_factory=Direction)

    @classmethod
    def symmetric(
        cls,
        name: str,
        rtt_ms: float,
        loss: float = 0.0,
        jitter_ms: float = 0.0,
        rate_mbit: float = 0.0,
        burst: float = 0.0,
    ) -> LinkProfile:
        """Half the RTT each way; ``loss`` each way (bursts of ``burst`` packets if > 1)."""
        ge = GilbertElliott.from_mean(loss, burst) if burst > 1 and loss > 0 else None
        one = Direction(
            delay_ms=rtt_ms / 2, jitter_ms=jitter_ms, loss=loss, burst=ge, rate_mbit=rate_mbit
        )
        return cls(name, one, one)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "sc_to_sp": asdict(self.sc_to_sp),
            "sp_to_sc": asdict(self.sp_to_sc),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LinkProfile:
        return cls(
            data["name"],
            Direction.from_json(data["sc_to_sp"]),
            Direction.from_json(data["sp_to_sc"]),
        )


# --- namespaces ----------------------------------------------------------------------------


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


@contextlib.contextmanager
def in_namespace(name: str) -> Iterator[None]:
    """Run the block's calls in network namespace ``name`` (this thread only).

    Sockets made inside stay in that namespace after the block, usable from
    any thread.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def why_unavailable() -> str | None:
    """Why the emulator cannot run here, or None."""
    if sys.platform != "linux":
        return "network namespaces and TUN devices need Linux"
    if os.geteuid() != 0:
        return "network namespaces and TUN devices need root"
    if not os.path.exists("/dev/net/tun"):
        return "no /dev/net/tun (TUN devices unavailable)"
    if subprocess.run(["ip", "-V"], capture_output=True, check=False).returncode != 0:
        return "the ip command (iproute2) is not installed"
    return None


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left by emulators whose process is gone (a kill -9)."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in Path("/run/netns").iterdir():
            name = entry.name
            if not name.startswith(NS_PREFIX):
                continue
            pid = name.rsplit("-", 1)[-1]
            if pid.isdigit() and not Path(f"/proc/{pid}").exists():
                subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
                removed.append(name)
    return removed


class LinkEmulator:
    """Two namespaces joined by the forwarder; always removed on exit.

    ``sc_ns`` holds ``SC_ADDR``, ``sp_ns`` holds ``SP_ADDR``, each with its own
    loopback up. Names carry the tag and this process's id, so runs never meet.
    """

    def __init__(self, profile: LinkProfile, tag: str = "", seed: int | None = None) -> None:
        suffix = f"{tag}-{os.getpid()}" if tag else str(os.getpid())
        self.sc_ns = f"{NS_PREFIX}sc-{suffix}"
        self.sp_ns = f"{NS_PREFIX}sp-{suffix}"
        self.profile = profile
        self.seed = seed
        self.proc: subprocess.Popen[str] | None = None
        self._made: list[str] = []

    @staticmethod
    def prefix(namespace: str) -> list[str]:
        return ["ip", "netns", "exec", namespace]

    def __enter__(self) -> LinkEmulator:
        reason = why_unavailable()
        if reason:
            raise RuntimeError(reason)
        remove_stale_namespaces()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        for ns in (self.sc_ns, self.sp_ns):
            _run("ip", "netns", "add", ns)
            self._made.append(ns)
        argv = [
            sys.executable,
            "-m",
            "bench.wan.forwarder",
            self.sc_ns,
            self.sp_ns,
            json.dumps(self.profile.to_json()),
        ]
        if self.seed is not None:
            argv.append(str(self.seed))
        root = Path(__file__).resolve().parents[2]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        }
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=root
        )
        hello = self._answer()
        if not hello.get("ready"):
            raise RuntimeError(f"link forwarder did not start: {hello}")
        self.realtime = bool(hello.get("realtime"))
        for ns, addr, peer in ((self.sc_ns, SC_ADDR, SP_ADDR), (self.sp_ns, SP_ADDR, SC_ADDR)):
            _run("ip", "-n", ns, "addr", "add", addr, "peer", f"{peer}/32", "dev", TUN_NAME)
            _run(
                "ip", "-n", ns, "link", "set", TUN_NAME, "mtu", str(MTU), "txqueuelen", "1000", "up"
            )
            _run("ip", "-n", ns, "link", "set", "lo", "up")

    def _answer(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"link forwarder exited ({self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def command(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def set_profile(self, profile: LinkProfile) -> None:
        self.command("set", profile=profile.to_json())
        self.profile = profile

    def blackout(self, seconds: float) -> tuple[float, float]:
        """Drop every packet both ways for ``seconds``; returns (start, end) on
        ``time.monotonic()``'s clock."""
        answer = self.command("blackout", seconds=seconds)
        return float(answer["from"]), float(answer["until"])

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                if proc.stdin is not None:
                    proc.stdin.close()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        for ns in reversed(self._made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self._made.clear()
