"""edgerq's SC and SP as the benchmarks run them: the shipped sample configs with
ports and settings replaced, their command lines, and a pair started.

A pair runs on this machine's loopback by default; given other ``Ends`` (the
WAN bench's namespaces) the SC runs on the SC's side and the SP on the SP's,
dialling the SC's side at its address.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.common import REPO, Skip
from bench.procs import LOCALHOST, LOOPBACK, Ends, Proc, Stack

SAMPLE_CONSUMER = REPO / "sc" / "consumer.xml"
SAMPLE_PROVIDER = REPO / "sp" / "provider.xml"
# Daemon log level: the readiness lines ("accepting pipes", "registered") are
# info; everything logged per stream or frame is debug, so info costs nothing.
DAEMON_LOG_LEVEL = "info"


def _set(parent: ET.Element, tag: str, value: object) -> None:
    elem = parent.find(tag)
    if elem is None:
        elem = ET.SubElement(parent, tag)
    elem.text = str(value)


def consumer_config(
    listener_port: int,
    service_port: int,
    *,
    max_connections: int | None = None,
    request_ttl: float | None = None,
    protocol: str | None = None,
    inaddr_any: bool | None = None,
) -> str:
    """The shipped sample ``sc/consumer.xml`` with the ports (and given settings) replaced.
    ``inaddr_any``: the pipe listener on every address (else loopback only)."""
    root = ET.parse(SAMPLE_CONSUMER).getroot()
    listener = root.find("listener")
    service = root.find("services/service")
    if listener is None or service is None:
        raise RuntimeError(f"{SAMPLE_CONSUMER}: no listener or service")
    _set(listener, "port", listener_port)
    if protocol is not None:
        _set(listener, "protocol", protocol)
    if inaddr_any is not None:
        _set(listener, "inaddr_any", "yes" if inaddr_any else "no")
    _set(service, "port", service_port)
    for elem in (root, service):
        if max_connections is not None:
            _set(elem, "max_connections", max_connections)
        if request_ttl is not None:
            _set(elem, "request_ttl", request_ttl)
    return ET.tostring(root, encoding="unicode")


def sample_setting(name: str) -> str | None:
    root = ET.parse(SAMPLE_CONSUMER).getroot()
    elem = root.find(f"services/service/{name}")
    if elem is None:
        elem = root.find(name)
    return None if elem is None or elem.text is None else elem.text.strip()


def provider_config(
    pipe_port: int,
    backend_port: int,
    *,
    protocol: str | None = None,
    pipe_settings: dict[str, str] | None = None,
) -> str:
    """The shipped sample ``sp/provider.xml`` pointed at the given pipe port and backend
    (on loopback, unless ``pipe_settings`` names another ``hostname``)."""
    root = ET.parse(SAMPLE_PROVIDER).getroot()
    pipe = root.find("pipes/pipe")
    service = None if pipe is None else pipe.find("services/service")
    if pipe is None or service is None:
        raise RuntimeError(f"{SAMPLE_PROVIDER}: no pipe or service")
    _set(pipe, "hostname", LOCALHOST)
    _set(pipe, "port", pipe_port)
    if protocol is not None:
        _set(pipe, "protocol", protocol)
    for tag, value in (pipe_settings or {}).items():
        _set(pipe, tag, value)
    _set(service, "hostname", LOCALHOST)
    _set(service, "port", backend_port)
    return ET.tostring(root, encoding="unicode")


def edgerq_argv(command: str, config: Path) -> list[str]:
    return [sys.executable, "-m", "edgerq", "--log-level", DAEMON_LOG_LEVEL, command, str(config)]


def edgerq_check(config: Path) -> tuple[bool, str]:
    done = subprocess.run(
        [sys.executable, "-m", "edgerq", "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = (done.stdout + done.stderr).strip().splitlines()
    last = lines[-1] if lines else ""
    # drop the "FILE:LINE: " of a config error: the file is a throwaway
    return done.returncode == 0, re.sub(r"^\S+\.xml(:\d+)?: ", "", last)


def sc_fingerprint(config: Path) -> str:
    """``edgerq fingerprint CONSUMER.xml``: the SHA-256 pin of the SC's udp certificate."""
    done = subprocess.run(
        [sys.executable, "-m", "edgerq", "fingerprint", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    words = done.stdout.split()
    if done.returncode != 0 or not words:
        raise Skip(f"udp carrier not available (edgerq fingerprint: {done.stderr.strip()})")
    return words[0]


@dataclass
class Tunnel:
    sc: Proc
    sp: Proc
    listener_port: int
    service_port: int


def start_edgerq(
    stack: Stack,
    label: str | None,
    backend_port: int,
    *,
    max_connections: int | None = None,
    request_ttl: float | None = None,
    protocol: str | None = None,
    inaddr_any: bool | None = None,
    sp_pipe_port: Callable[[int], int] | None = None,
    source: Path | None = None,
    ends: Ends = LOOPBACK,
    daemon_argv: Callable[[str, Path], list[str]] = edgerq_argv,
) -> Tunnel:
    """Start an SC and an SP (in that order) relaying a service port to ``backend_port``.

    ``label`` prefixes the names of the processes and their configs (``LABEL-sc``,
    ``LABEL-consumer.xml``; none: ``sc``, ``consumer.xml``). ``sp_pipe_port`` maps
    the SC's listener port to a port on the SP's side's loopback that the SP dials
    instead (it may start something in between, such as the stunnel pair).
    ``source``: a ``src`` directory whose edgerq the daemons run instead of this
    one (another revision, measured beside this one). ``ends``: where the SC and
    the SP run. ``daemon_argv``: the command line of ``sc`` or ``sp`` with its config
    (another interpreter's edgerq, a profiler around it).
    """
    try:
        import edgerq  # noqa: F401
    except ImportError as exc:
        raise Skip(f"edgerq is not importable by {sys.executable} ({exc})") from None

    def named(name: str) -> str:
        return f"{label}-{name}" if label else name

    listener_port, service_port = ends.port("pipe"), ends.port("service")
    sc_conf = stack.path(named("consumer.xml"))
    sc_conf.write_text(
        consumer_config(
            listener_port,
            service_port,
            max_connections=max_connections,
            request_ttl=request_ttl,
            protocol=protocol,
            inaddr_any=inaddr_any,
        )
    )
    ok, why = edgerq_check(sc_conf)
    if not ok:
        if protocol is not None and protocol != "tcp":
            raise Skip(f"{protocol} carrier not available ({why})")
        raise RuntimeError(f"edgerq check {sc_conf}: {why}")
    pipe_settings = {"hostname": ends.sc_host}
    if protocol == "udp":
        # the SC generates its certificate once; the SP pins its fingerprint
        pipe_settings["server_fingerprint"] = sc_fingerprint(sc_conf)
    env = {"EDGERQ_AUTH_TOKEN": secrets.token_hex(16)}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    sc = stack.start(named("sc"), ends.sc.argv(daemon_argv("sc", sc_conf)), env)
    sc.wait_log("accepting pipes")
    ends.sc.wait_port(sc, LOCALHOST, service_port)
    dial = listener_port
    if sp_pipe_port is not None:
        dial = sp_pipe_port(listener_port)
        pipe_settings["hostname"] = LOCALHOST
    sp_conf = stack.path(named("provider.xml"))
    sp_conf.write_text(
        provider_config(dial, backend_port, protocol=protocol, pipe_settings=pipe_settings)
    )
    sp = stack.start(named("sp"), ends.sp.argv(daemon_argv("sp", sp_conf)), env)
    sp.wait_log("registered", timeout=ends.register_timeout)
    return Tunnel(sc, sp, listener_port, service_port)
