"""bench.paths and bench.daemons set up the paths bench.run and bench.wan.run compare:
edgerq's configs from the shipped samples, and the stunnel pair on either kind of ends.
Nothing is started: processes are recorded, not run."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, cast

import pytest
from bench import paths
from bench.common import Skip
from bench.daemons import consumer_config, provider_config
from bench.procs import LOOPBACK, Ends, Proc, Stack


def test_the_consumer_config_is_the_sample_with_the_settings_given() -> None:
    root = ET.fromstring(
        consumer_config(
            12345, 3000, max_connections=128, request_ttl=10, protocol="udp", inaddr_any=True
        )
    )
    assert root.findtext("listener/port") == "12345"
    assert root.findtext("listener/protocol") == "udp"
    assert root.findtext("listener/inaddr_any") == "yes"
    assert root.findtext("services/service/port") == "3000"
    assert root.findtext("max_connections") == "128"
    assert root.findtext("services/service/request_ttl") == "10"
    assert ET.fromstring(consumer_config(1, 2, inaddr_any=False)).findtext("listener/inaddr_any")


def test_the_provider_config_dials_loopback_unless_told_another_host() -> None:
    here = ET.fromstring(provider_config(4444, 8000))
    assert (here.findtext("pipes/pipe/hostname"), here.findtext("pipes/pipe/port")) == (
        "127.0.0.1",
        "4444",
    )
    assert here.findtext("pipes/pipe/services/service/port") == "8000"
    there = ET.fromstring(provider_config(12345, 8000, pipe_settings={"hostname": "10.201.0.1"}))
    assert there.findtext("pipes/pipe/hostname") == "10.201.0.1"


def test_ends_give_their_fixed_ports_and_free_ones_otherwise() -> None:
    ends = Ends(fixed_ports={"pipe": 12345})
    assert ends.port("pipe") == 12345
    free = {LOOPBACK.port("pipe"), LOOPBACK.port("pipe")}
    assert len(free) == 2 and all(1024 <= p < 65536 for p in free)


class Recorded:
    """A side of a path that records what would run there."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def argv(self, argv: list[str]) -> list[str]:
        return [f"@{self.name}", *argv]

    def wait_port(self, proc: Proc, host: str, port: int, timeout: float = 20.0) -> None:
        self.log.append(f"{self.name} waits for {proc.name} at {host}:{port}")


class RecordingStack(Stack):
    def __init__(self, log: list[str]) -> None:
        super().__init__()
        self.log = log

    def start(self, name: str, argv: list[str], *args: Any, **kwargs: Any) -> Proc:
        self.log.append(f"start {name}: {' '.join(argv).replace(str(self.dir), 'DIR')}")
        return Proc(name, cast("subprocess.Popen[bytes]", None), self.dir / f"{name}.log")


TOOLS = {"stunnel4": "/usr/bin/stunnel4", "openssl": "/usr/bin/openssl"}
GLOBAL = (
    "foreground = yes\npid =\ndebug = 4\nsocket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
    "socket = l:SO_KEEPALIVE=1\nsocket = r:SO_KEEPALIVE=1\n\n[edgerq-pipe]\n"
)


def sidecars(
    monkeypatch: pytest.MonkeyPatch, sides: tuple[str, str], listener: int, **ends: Any
) -> tuple[int, str, str, list[str]]:
    """The stunnel pair in front of ``listener``, the SC's side and the SP's named
    ``sides``: the port the SP dials, both configs, and what ran where."""

    def cert(env: paths.Env, name: str) -> tuple[Path, Path]:
        return Path("/certs/key.pem"), Path("/certs/cert.pem")

    monkeypatch.setattr(paths, "_make_cert", cert)
    delay = ends.pop("delay", True)
    log: list[str] = []
    placed = Ends(sc=Recorded(sides[0], log), sp=Recorded(sides[1], log), **ends)
    with RecordingStack(log) as stack:
        port = paths.stunnel_sidecars(paths.Env(stack, TOOLS, 8000, placed), delay=delay)(listener)
        server = stack.path("stunnel-server.conf").read_text()
        client = stack.path("stunnel-client.conf").read_text()
    return port, server, client, log


def test_the_stunnel_pair_across_namespaces_listens_at_the_sc_sides_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port, server, client, log = sidecars(
        monkeypatch,
        ("sc-ns", "sp-ns"),
        12345,
        sc_host="10.201.0.1",
        fixed_ports={"stunnel-server": 4443, "stunnel-client": 4444},
        delay=False,
    )
    assert port == 4444
    assert server == GLOBAL + (
        "accept = 10.201.0.1:4443\nconnect = 127.0.0.1:12345\n"
        "cert = /certs/cert.pem\nkey = /certs/key.pem\n"
    )
    assert client == GLOBAL + (
        "client = yes\naccept = 127.0.0.1:4444\nconnect = 10.201.0.1:4443\n"
        "verify = 2\nCAfile = /certs/cert.pem\ncheckHost = stunnel-sc\n"
    )
    assert log == [
        "start stunnel-server: @sc-ns /usr/bin/stunnel4 DIR/stunnel-server.conf",
        "sc-ns waits for stunnel-server at 10.201.0.1:4443",
        "start stunnel-client: @sp-ns /usr/bin/stunnel4 DIR/stunnel-client.conf",
        "sp-ns waits for stunnel-client at 127.0.0.1:4444",
    ]


def test_the_stunnel_pair_on_loopback_resolves_per_connection_as_the_shipped_confs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server, client, _ = sidecars(
        monkeypatch, ("here", "here"), 20000, fixed_ports={"stunnel-server": 20001}
    )
    assert "accept = 127.0.0.1:20001\nconnect = 127.0.0.1:20000\ndelay = yes\n" in server
    assert "connect = 127.0.0.1:20001\ndelay = yes\nverify = 2\n" in client


def test_a_missing_tool_skips_the_path_before_anything_starts() -> None:
    log: list[str] = []
    with RecordingStack(log) as stack, pytest.raises(Skip, match="stunnel4 not found"):
        paths.stunnel_sidecars(paths.Env(stack, {"openssl": "/usr/bin/openssl"}, 8080))
    assert log == []
