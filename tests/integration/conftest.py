"""Fixtures that run real SC and SP processes on 127.0.0.1.

How a test learns what a daemon did, without guessing or grepping:

- Ports: configure 0 and read what was bound from the daemon's ready line
  (``sc.listener_port()``, ``sc.service_port()``, ``daemon.admin_url``); it is
  printed once every port is bound, so ``daemon.ready()`` is also the wait for
  readiness. ``free_port()`` only for a port needed before anything binds it.
- State: every daemon ``Processes.start`` runs gets an admin endpoint on a free
  port (unless its config has one): ``sc.wait_serving(pipes=n)``,
  ``sp.wait_registered()``, ``daemon.status()`` / ``wait_status(...)``,
  ``daemon.metric(sample)``, ``sc.open_connections()``; a reload applied prints
  another ready line (``daemon.ready(count=2)``).
- Logs: ``wait_log`` where what the log says is the subject (an error message).
- A stalled flow: ``wait_steady(read, at_least, ...)``, not a sleep.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgerq.cli import READY_PREFIX
from tests.integration.backends import HashService

SERVICE_UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")

ADMIN_ANY_PORT = "<admin><port>0</port></admin>"
"""Added to every config ``Processes.start`` is given, unless it has its own
``<admin>``: the admin endpoint is how tests learn a daemon's state (``/status``,
``/readyz``)."""


def with_admin(xml: str) -> str:
    """``xml`` with an admin endpoint on any free port, unless it configures one."""
    if "<admin>" in xml:
        return xml
    return re.sub(r"(<service_(?:consumer|provider)>)", r"\1" + ADMIN_ANY_PORT, xml, count=1)


def free_port() -> int:
    """A port free a moment ago. Only for a port that must be known before anything
    binds it (a relay's target, a port to be taken over later); a daemon's own ports
    are configured as 0 and read from its ready line (``Daemon.ready``): a port found
    free, closed and handed on can be taken by someone else in between."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_steady(
    read: Callable[[], float], at_least: float, timeout: float, what: str, quiet: float = 1.0
) -> float:
    """Until ``read()`` is at least ``at_least`` and has not moved for ``quiet`` s (a
    flow that has stalled, e.g. a stream whose window is used up); its value then."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif last >= at_least and time.monotonic() - since >= quiet:
            return last
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last {last})")


@dataclass
class Daemon:
    """An `edgerq sc|sp` process; its log is kept in a file."""

    command: str
    config: Path
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    prefix: list[str] = field(default_factory=list)
    """Run under this command (``ip netns exec NAME``)."""

    @property
    def out_path(self) -> Path:
        """Its stdout: only the ``EDGERQ_READY`` lines (logs go to stderr)."""
        return self.log_path.with_suffix(".out")

    def start(self) -> Daemon:
        env = {**os.environ, **self.env}
        self._log = self.log_path.open("ab")
        self._out = self.out_path.open("ab")
        self.proc = subprocess.Popen(
            [
                *self.prefix,
                sys.executable,
                "-m",
                "edgerq",
                "--log-level",
                "debug",
                self.command,
                str(self.config),
            ],
            stdout=self._out,
            stderr=self._log,
            env=env,
        )
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = 15.0, count: int = 1) -> None:
        """For a test whose subject is what a log line says; readiness and state
        changes have their own signals (``ready``, ``status``, ``wait_serving``)."""
        wait_for(lambda: self.log.count(text) >= count, timeout, f"{text!r} in {self.log_path}")

    def ready_lines(self) -> list[dict[str, Any]]:
        """Every ``EDGERQ_READY`` line so far (one at start, one per applied reload)."""
        try:
            text = self.out_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [
            json.loads(line.removeprefix(READY_PREFIX))
            for line in text.splitlines(keepends=True)
            if line.startswith(READY_PREFIX) and line.endswith("\n")
        ]

    def ready(self, timeout: float = 15.0, count: int = 1) -> dict[str, Any]:
        """The daemon's own signal that its ports are bound: the newest ready line
        (after at least ``count`` of them), with the ports it bound."""

        def seen() -> bool:
            if len(self.ready_lines()) >= count:
                return True
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.command} exited with {self.proc.returncode} before it was ready:\n"
                    + "\n".join(self.log.splitlines()[-20:])
                )
            return False

        wait_for(seen, timeout, f"{self.command}'s ready line in {self.out_path}")
        return self.ready_lines()[-1]

    def pinned_config(self) -> str:
        """Its config with every port it bound as 0 written out: for a test that
        restarts the daemon where its peers know to find it."""
        from lxml import etree

        bound = self.ready()
        root = etree.fromstring(self.config.read_bytes())

        def pin(elem: Any, port: object) -> None:
            if port is not None:
                elem.find("port").text = str(port)

        for listener in root.iterfind("listener"):
            pin(listener, bound["listeners"][(listener.findtext("protocol") or "tcp").strip()])
        for service in root.iterfind("services/service"):
            pin(service, bound["services"].get((service.findtext("uuid") or "").strip()))
        for admin in root.iterfind("admin"):
            pin(admin, bound["admin"])
        return str(etree.tostring(root, encoding="unicode"))

    def listener_port(self, protocol: str = "tcp") -> int:
        return int(self.ready()["listeners"][protocol])

    def service_port(self, service: uuid.UUID = SERVICE_UUID) -> int:
        return int(self.ready()["services"][str(service)])

    @property
    def admin_url(self) -> str:
        port = self.ready()["admin"]
        assert port is not None, f"{self.config} has no <admin>"
        return f"http://127.0.0.1:{port}"

    def get(self, path: str) -> tuple[int, str]:
        """(HTTP status, body) of a GET on the daemon's admin endpoint."""
        try:
            with urllib.request.urlopen(self.admin_url + path, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def status(self) -> dict[str, Any]:
        code, body = self.get("/status")
        assert code == 200, body
        result: dict[str, Any] = json.loads(body)
        return result

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], what: str, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Poll ``/status`` until ``predicate`` holds; the status that satisfied it."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [self.status()]
            return predicate(found[0])

        wait_for(check, timeout, f"{what} in {self.command}'s /status")
        return found[0]

    def metric(self, sample: str) -> float:
        """One sample of ``/metrics`` (``name{labels}`` as printed), 0 when absent."""
        code, body = self.get("/metrics")
        assert code == 200, body
        match = re.search(rf"^{re.escape(sample)} (\S+)$", body, re.M)
        return float(match.group(1)) if match else 0.0

    def open_connections(self, service: uuid.UUID = SERVICE_UUID) -> int:
        """SC: client connections of ``service`` open now (queued ones too)."""
        for s in self.status()["services"]:
            if s["uuid"] == str(service):
                return int(s["open"])
        raise AssertionError(f"{service} is not a service of {self.config}")

    def serving(self, service: uuid.UUID = SERVICE_UUID) -> int:
        """SC: how many registered pipes serve ``service`` now."""
        for s in self.status()["services"]:
            if s["uuid"] == str(service):
                return int(s["pipes"])
        raise AssertionError(f"{service} is not a service of {self.config}")

    def wait_serving(
        self, service: uuid.UUID = SERVICE_UUID, pipes: int = 1, timeout: float = 30.0
    ) -> None:
        """SC: until at least ``pipes`` registered pipes serve ``service``."""
        wait_for(
            lambda: self.serving(service) >= pipes,
            timeout,
            f"{pipes} pipe(s) serving {service} on {self.command}",
        )

    def wait_registered(self, timeout: float = 30.0) -> None:
        """SP: until a pipe of it is registered (its ``/readyz`` answers 200)."""
        wait_for(lambda: self.get("/readyz")[0] == 200, timeout, f"{self.command} registered")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is not None:
            self._close_files()
            return int(self.proc.returncode)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.command} did not stop on SIGTERM") from None
        self._close_files()
        return int(self.proc.returncode)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self._close_files()

    def _close_files(self) -> None:
        self._log.close()
        self._out.close()


def consumer_xml(
    listener_port: int,
    services: list[dict[str, object]],
    token: str | None = None,
    extra: str = "",
    listener_extra: str = "",
    inaddr_any: bool = False,
) -> str:
    parts = []
    for s in services:
        inner = "".join(f"<{k}>{v}</{k}>" for k, v in s.items())
        parts.append(f"<service>{inner}</service>")
    token_xml = f"<auth_token>{token}</auth_token>" if token else ""
    return (
        f"<service_consumer>{token_xml}{extra}<request_ttl>3</request_ttl>"
        f"<listener><inaddr_any>{'yes' if inaddr_any else 'no'}</inaddr_any>"
        f"<port>{listener_port}</port>{listener_extra}"
        "</listener>"
        f"<services>{''.join(parts)}</services></service_consumer>"
    )


def provider_xml(
    pipes: list[tuple[int, list[tuple[uuid.UUID, int]], str | None]],
    pipe_extra: str = "",
    sc_host: str = "127.0.0.1",
    extra: str = "",
) -> str:
    out = []
    for index, (port, services, token) in enumerate(pipes, 1):
        svc = "".join(
            f"<service><uuid>{u}</uuid><name>svc{i}</name><hostname>127.0.0.1</hostname>"
            f"<port>{p}</port></service>"
            for i, (u, p) in enumerate(services)
        )
        token_xml = f"<auth_token>{token}</auth_token>" if token else ""
        out.append(
            f"<pipe><name>pipe{index}</name><hostname>{sc_host}</hostname><port>{port}</port>"
            f"{token_xml}{pipe_extra}<services>{svc}</services></pipe>"
        )
    return f"<service_provider>{extra}<pipes>{''.join(out)}</pipes></service_provider>"


@dataclass
class Tunnel:
    sc: Daemon
    sp: Daemon
    service_port: int
    listener_port: int
    backend: HashService
    sc_admin: str | None = None
    """The SC's admin URL (``http://127.0.0.1:port``), when asked for."""


class Processes:
    """Starts daemons and makes sure every one is stopped at the end of a test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.daemons: list[Daemon] = []
        self._n = 0

    def start(
        self,
        command: str,
        xml: str,
        env: dict[str, str] | None = None,
        prefix: list[str] | None = None,
    ) -> Daemon:
        self._n += 1
        config = self.tmp_path / f"{command}{self._n}.xml"
        config.write_text(with_admin(xml))
        daemon = Daemon(
            command,
            config,
            self.tmp_path / f"{command}{self._n}.log",
            env or {},
            prefix=prefix or [],
        )
        self.daemons.append(daemon.start())
        return daemon

    def stop_all(self) -> list[int]:
        codes = []
        for d in self.daemons:
            if d.proc is not None and not d._log.closed:
                codes.append(d.stop())
        return codes


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the test, so fixtures can tell a failure."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def daemon_log_tails(daemons: list[Daemon], lines: int = 60) -> str:
    """The last warnings and errors of each daemon's log, for a failed test's report."""
    out = []
    for daemon in daemons:
        try:
            text = daemon.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            out.append(f"--- {daemon.log_path.name}: unreadable ({exc})")
            continue
        notable = [line for line in text if " WARNING " in line or " ERROR " in line]
        out.append(f"--- {daemon.log_path} ({len(text)} lines; last warnings and errors)")
        out.extend(notable[-lines:])
    return "\n".join(out)


@pytest.fixture
def processes(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed and procs.daemons:
        # Shown in the failure's report: what the daemons saw when it failed.
        report.sections.append(("daemon logs", daemon_log_tails(procs.daemons)))


@pytest.fixture
def backend() -> Iterator[HashService]:
    with HashService() as service:
        yield service


def carrier_settings(carrier: str, tmp_path: Path) -> tuple[str, str]:
    """(listener_extra, pipe_extra) for the carrier; udp pins a fresh certificate."""
    if carrier == "tcp":
        return "", ""
    from edgerq.config.tls import ensure_certificate, fingerprint_file

    cert, key = tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem"
    ensure_certificate(cert, key)
    listener_extra = (
        f"<protocol>udp</protocol><certificate>{cert}</certificate><private_key>{key}</private_key>"
    )
    pipe_extra = (
        f"<protocol>udp</protocol><server_fingerprint>{fingerprint_file(cert)}</server_fingerprint>"
    )
    return listener_extra, pipe_extra


@dataclass
class ConsumerHalf:
    """A running SC, and what an SP needs to reach it over the chosen carrier."""

    sc: Daemon
    listener_port: int
    service_port: int
    pipe_extra: str
    admin: str | None = None


def start_consumer(
    processes: Processes,
    carrier: str,
    tmp_path: Path,
    token: str | None = "s3cret",
    admin: bool = False,
) -> ConsumerHalf:
    """An SC on ports of its own choosing (0), read from its ready line. Every SC
    has an admin endpoint now; ``admin`` is kept for callers that asked for one."""
    listener_extra, pipe_extra = carrier_settings(carrier, tmp_path)
    sc = processes.start(
        "sc",
        consumer_xml(
            0,
            [{"uuid": SERVICE_UUID, "name": "hash", "port": 0}],
            token=token,
            listener_extra=listener_extra,
        ),
    )
    bound = sc.ready()
    return ConsumerHalf(
        sc,
        int(bound["listeners"][carrier]),
        int(bound["services"][str(SERVICE_UUID)]),
        pipe_extra,
        sc.admin_url,
    )


def start_provider(
    processes: Processes,
    consumer: ConsumerHalf,
    service_port: int,
    token: str | None = "s3cret",
    dial_port: int | None = None,
) -> Daemon:
    """An SP offering ``service_port`` to ``consumer`` (through ``dial_port`` if given)."""
    sp = processes.start(
        "sp",
        provider_xml(
            [(dial_port or consumer.listener_port, [(SERVICE_UUID, service_port)], token)],
            pipe_extra=consumer.pipe_extra,
        ),
    )
    sp.wait_registered()
    return sp


def start_tunnel(
    processes: Processes, backend: HashService, carrier: str, tmp_path: Path, admin: bool = False
) -> Tunnel:
    consumer = start_consumer(processes, carrier, tmp_path, admin=admin)
    sp = start_provider(processes, consumer, backend.port)
    return Tunnel(
        consumer.sc, sp, consumer.service_port, consumer.listener_port, backend, consumer.admin
    )


@pytest.fixture
def tunnel(processes: Processes, backend: HashService, tmp_path: Path) -> Tunnel:
    """SC + SP on loopback (tcp carrier) with one service pointing at the hash service."""
    return start_tunnel(processes, backend, "tcp", tmp_path)


@pytest.fixture(params=["tcp", "udp"])
def any_tunnel(
    request: pytest.FixtureRequest, processes: Processes, backend: HashService, tmp_path: Path
) -> Tunnel:
    """The same tunnel over each carrier in turn."""
    return start_tunnel(processes, backend, str(request.param), tmp_path)
