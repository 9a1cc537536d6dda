"""The bench's processes: started, waited for, always stopped; and where they run.

A path's two ends (the SC's side and the SP's side) run on this machine's own
network (``HERE``) or, for the WAN bench, each in a network namespace of its
own: an ``Ends`` says which, and how the SP's side reaches the SC's.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Protocol

LOCALHOST = "127.0.0.1"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return int(s.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((LOCALHOST, port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}:\n{self.tail()}".rstrip()
            )

    def wait_until(
        self, ready: Callable[[], bool], failure: Callable[[], str], timeout: float
    ) -> None:
        """Poll ``ready`` while the process lives; after ``timeout`` seconds, a
        RuntimeError ``NAME: failure()``."""
        deadline = time.monotonic() + timeout
        while not ready():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {failure()}")
            time.sleep(0.05)

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        self.wait_until(
            lambda: text in self.log_text(),
            lambda: f"no {text!r} after {timeout:g} s:\n{self.tail()}",
            timeout,
        )

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        self.wait_until(
            lambda: port_open(port), lambda: f"port {port} not open after {timeout:g} s", timeout
        )


class Stack:
    """Processes and a temp dir that are always cleaned up, on errors and Ctrl-C too.

    Every process runs in its own session (process group), so that stopping it
    also stops what it forked (socat children, sshd sessions).
    """

    def __init__(self, prefix: str = "edgerq-bench-") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.procs: list[Proc] = []

    def path(self, name: str) -> Path:
        return self.dir / name

    def start(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str] | None = None,
        stdin: int | None = subprocess.DEVNULL,
    ) -> Proc:
        log_path = self.dir / f"{name}.log"
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                cwd=self.dir,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc, timeout: float = 5.0) -> None:
        popen = proc.popen
        if popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        # what the leader forked may outlive it (socat children): end the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        for proc in reversed(list(self.procs)):
            try:
                self.stop(proc)
            except Exception as exc:  # keep cleaning up
                log(f"cleanup: {proc.name}: {exc}")
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into KeyboardInterrupt, so ``finally`` blocks clean up."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


# --- where the ends of a path run ---------------------------------------------------------


class Side(Protocol):
    """Where one end of a path runs its processes."""

    def argv(self, argv: list[str]) -> list[str]:
        """The command line that runs ``argv`` there."""
        ...

    def wait_port(self, proc: Proc, host: str, port: int, timeout: float = 20.0) -> None:
        """Wait, while ``proc`` lives, until ``host:port`` accepts a connection made there."""
        ...


class Here:
    """This machine's own network: commands as they are, ports on loopback."""

    def argv(self, argv: list[str]) -> list[str]:
        return argv

    def wait_port(self, proc: Proc, host: str, port: int, timeout: float = 20.0) -> None:
        if host != LOCALHOST:
            raise ValueError(f"{host}: only {LOCALHOST} is reached here")
        proc.wait_port(port, timeout)


HERE = Here()


@dataclass(frozen=True)
class Ends:
    """Where a path's SC side and SP side run, and how the SP's side reaches the SC's."""

    sc: Side = HERE
    sp: Side = HERE
    sc_host: str = LOCALHOST
    """The SC side's address, as the SP's side dials it."""
    fixed_ports: Mapping[str, int] = field(default_factory=dict)
    """Ports by role (``pipe``, ``service``, ``stunnel-server``, ``stunnel-client``) where
    they are fixed; every other is a free port of this machine's loopback."""
    register_timeout: float = 30.0
    """How long the SP may take to register its pipe."""

    def port(self, role: str) -> int:
        return self.fixed_ports.get(role) or free_port()


LOOPBACK = Ends()
"""Both ends on this machine's loopback: ``make bench``, ``bench.ab``, ``bench.scale``..."""
