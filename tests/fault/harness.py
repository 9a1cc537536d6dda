"""Building blocks of the fault suite: a hash service in its own process (so it
can be SIGKILLed), a mixed load that checks every completed response by
SHA-256, and a probe that measures how long the tunnel takes to serve again.

A response counts as *completed* when the client got all of it: the 64-hex
digest line of an upload, or every byte of a download. A completed response
whose content is wrong (or a download longer than asked) is *corrupted*, and
no fault may ever cause one. Anything else (refused, reset, timed out, cut
short) is a *failed* request, expected while a fault lasts, and counted.
"""

from __future__ import annotations

import hashlib
import itertools
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.backends import payload, sha256
from tests.integration.clients import connect

ROOT = Path(__file__).resolve().parents[2]
BIG = 10 * 1024 * 1024
SOCKET_TIMEOUT = 20.0
"""Each blocking client call gives up after this long: every loop is bounded."""


class BackendProcess:
    """``python -m tests.integration.backends PORT`` as a child process, on a fixed
    port so that the SP's configuration stays valid across kill and restart."""

    def __init__(self, port: int, prefix: list[str] | None = None) -> None:
        self.port = port
        self.prefix = prefix or []
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> BackendProcess:
        self.proc = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "tests.integration.backends", str(self.port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Resets from clients cut off by a fault are expected; their
            # tracebacks from socketserver would only be noise.
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.strip() == str(self.port), f"backend did not start on {self.port}: {line!r}"
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


# --- one request of each kind ----------------------------------------------------


class Corrupted(AssertionError):
    """A completed response whose content is wrong."""


def _recv_all(sock: socket.socket, limit: int) -> bytes:
    chunks, size = [], 0
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return b"".join(chunks)


def upload_checked(port: int, data: bytes) -> bool:
    """Upload ``data``; True if the answer arrived and is the right digest,
    False if the request failed; raises ``Corrupted`` on a wrong whole answer."""
    try:
        with connect(port, timeout=SOCKET_TIMEOUT) as sock:
            sock.sendall(b"UP\n")
            view = memoryview(data)
            for start in range(0, len(data), 1 << 20):
                sock.sendall(view[start : start + (1 << 20)])
            sock.shutdown(socket.SHUT_WR)
            answer = _recv_all(sock, 100)
    except OSError:
        return False
    if len(answer) < 65 or not answer.endswith(b"\n"):
        return False  # cut short: the answer never completed
    if answer.decode(errors="replace").strip() != sha256(data):
        raise Corrupted(f"upload of {len(data)} bytes answered {answer[:80]!r}")
    return True


_expected_down: dict[tuple[int, int], str] = {}
_expected_lock = threading.Lock()


def expected_download(n: int, seed: int) -> str:
    with _expected_lock:
        if (n, seed) not in _expected_down:
            _expected_down[n, seed] = sha256(payload(n, seed))
        return _expected_down[n, seed]


def download_checked(port: int, n: int, seed: int) -> bool:
    """Download ``n`` bytes: True if all arrived intact, False if cut short or
    failed; raises ``Corrupted`` if all (or more) arrived and differ."""
    digest, size = hashlib.sha256(), 0
    try:
        with connect(port, timeout=SOCKET_TIMEOUT) as sock:
            sock.sendall(f"DOWN {n} {seed}\n".encode())
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
                size += len(chunk)
                if size > n:
                    raise Corrupted(f"download of {n} bytes delivered more than that")
    except OSError:
        return False
    if size < n:
        return False
    if digest.hexdigest() != expected_download(n, seed):
        raise Corrupted(f"download of {n} bytes (seed {seed}) arrived with a wrong hash")
    return True


# --- a mixed load ---------------------------------------------------------------------


@dataclass
class Load:
    """``small`` threads doing 1-4 KiB uploads back to back, and ``big`` threads
    alternating ``big_size`` downloads and uploads, until ``stop()``."""

    port: int
    small: int = 4
    big: int = 2
    big_size: int = BIG
    big_pause: float = 0.0
    ok: int = 0
    ok_big: int = 0
    failed: int = 0
    corrupted: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def start(self) -> Load:
        for i in range(self.small):
            self._threads.append(threading.Thread(target=self._run_small, name=f"small{i}"))
        for i in range(self.big):
            self._threads.append(threading.Thread(target=self._run_big, args=(i,), name=f"big{i}"))
        for t in self._threads:
            t.daemon = True
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            # Each call in a loop is bounded by SOCKET_TIMEOUT per recv; a big
            # transfer trickling in could take longer, so bound the wait too.
            t.join(timeout=4 * SOCKET_TIMEOUT)
            assert not t.is_alive(), f"load thread {t.name} is stuck"

    def _count(self, outcome: bool, big: bool = False) -> None:
        with self._lock:
            if outcome:
                self.ok += 1
                self.ok_big += big
            else:
                self.failed += 1

    def _guard(self, fn: object, *args: object) -> bool | None:
        try:
            return bool(fn(*args))  # type: ignore[operator]
        except Corrupted as exc:
            with self._lock:
                self.corrupted.append(str(exc))
            return None

    def _run_small(self) -> None:
        while not self._stop.is_set():
            n = next(self._seq)
            outcome = self._guard(upload_checked, self.port, payload(1024 + n % 3072, n))
            if outcome is None:
                continue
            self._count(outcome)
            if not outcome:
                self._stop.wait(0.05)  # no busy loop against a dead port

    def _run_big(self, index: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            seed = 1 + (n + index) % 3
            if (n + index) % 2:
                outcome = self._guard(download_checked, self.port, self.big_size, seed)
            else:
                outcome = self._guard(upload_checked, self.port, big_payload(self.big_size, seed))
            if outcome is not None:
                self._count(outcome, big=True)
            self._stop.wait(self.big_pause if outcome else max(self.big_pause, 0.1))

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return self.ok, self.failed, len(self.corrupted)


_big_payloads: dict[tuple[int, int], bytes] = {}


def big_payload(n: int, seed: int) -> bytes:
    with _expected_lock:
        if (n, seed) not in _big_payloads:
            _big_payloads[n, seed] = payload(n, seed)
        return _big_payloads[n, seed]


# --- recovery ---------------------------------------------------------------------------


def wait_served(port: int, timeout: float, since: float) -> float:
    """Probe with small uploads until one succeeds; seconds from ``since``.

    Each probe is checked like any other request: a wrong answer fails the test.
    """
    deadline = time.monotonic() + timeout
    body = payload(1000, 424242)
    while time.monotonic() < deadline:
        if upload_checked(port, body):
            return time.monotonic() - since
        time.sleep(0.05)
    raise AssertionError(f"the tunnel did not serve again within {timeout} s")


# --- process figures ------------------------------------------------------------------------


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")
