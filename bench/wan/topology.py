"""Where the WAN bench's processes run: the SC's side and the SP's side are the link
emulator's two network namespaces, the SP's side dialling the SC's at ``SC_ADDR``.

The namespaces are this run's own, so the ports are fixed: nothing else listens there.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from bench.procs import Ends, Proc
from bench.wan.linkemu import SC_ADDR, LinkEmulator, in_namespace

PIPE_PORT = 12345
SERVICE_PORT = 3000
BACKEND_PORT = 8000
STUNNEL_SERVER_PORT = 4443
STUNNEL_CLIENT_PORT = 4444


def port_open_in(namespace: str, host: str, port: int) -> bool:
    with in_namespace(namespace):
        sock = socket.socket()
    with sock:
        sock.settimeout(0.5)
        try:
            sock.connect((host, port))
            return True
        except OSError:
            return False


@dataclass(frozen=True)
class Namespace:
    """One end of the emulated WAN: a network namespace of the link emulator."""

    name: str

    def argv(self, argv: list[str]) -> list[str]:
        return [*LinkEmulator.prefix(self.name), *argv]

    def wait_port(self, proc: Proc, host: str, port: int, timeout: float = 20.0) -> None:
        proc.wait_until(
            lambda: port_open_in(self.name, host, port),
            lambda: f"{host}:{port} not open after {timeout:g} s",
            timeout,
        )


def wan_ends(link: LinkEmulator) -> Ends:
    return Ends(
        sc=Namespace(link.sc_ns),
        sp=Namespace(link.sp_ns),
        sc_host=SC_ADDR,
        fixed_ports={
            "pipe": PIPE_PORT,
            "service": SERVICE_PORT,
            "stunnel-server": STUNNEL_SERVER_PORT,
            "stunnel-client": STUNNEL_CLIENT_PORT,
        },
        register_timeout=60.0,
    )
