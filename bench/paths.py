"""The paths ``make bench`` and ``make bench-wan`` compare, set up.

direct is nginx itself (``bench.wrk.start_nginx``); then edgerq over tcp, over
tcp with the pipe through a stunnel pair, over udp, the same pairs running the
edgerq of ``--before REV``, socat, and ``ssh -R`` through a throwaway sshd. A
path's setup returns the port a client connects to, on the SC's side. The WAN
bench sets up its edgerq paths with the same pieces, its ``Ends`` placing the
SC's side and the SP's side in two network namespaces.
"""

from __future__ import annotations

import getpass
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import Skip, is_root, missing_reason
from bench.daemons import sample_setting, start_edgerq
from bench.procs import LOCALHOST, LOOPBACK, Ends, Stack, free_port
from bench.wrk import HTTP_TOOLS, MAX_CONNECTIONS_NEEDED

DEBIAN_TOOLS = {
    **HTTP_TOOLS,
    "socat": "socat",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
}
"""Every binary a path needs, and the Debian package it comes in."""


@dataclass
class Env:
    """What setting up a path needs: the run's processes, the tools found, the backend."""

    stack: Stack
    tools: dict[str, str]
    backend_port: int
    """The service behind every path (on the SP's side)."""
    ends: Ends = LOOPBACK
    notes: list[str] = field(default_factory=list)
    """What the results should say about how a path was set up."""
    before: str | None = None
    """``--before``: the revision whose edgerq the ``*-before`` paths run."""

    def before_source(self) -> Path:
        """REV's ``src``, extracted once (``git archive``) into the run's temp dir."""
        if self.before is None:
            raise Skip("no --before revision given")
        out = self.stack.path("before")
        if not (out / "src" / "edgerq").is_dir():
            out.mkdir(parents=True, exist_ok=True)
            archive = subprocess.run(
                ["git", "archive", self.before, "src"], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(out)], input=archive.stdout, check=True)
        return out / "src"

    def tool(self, binary: str) -> str:
        path = self.tools.get(binary)
        if path is None:
            raise Skip(missing_reason(binary, DEBIAN_TOOLS[binary]))
        return path


# --- edgerq, and the stunnel pair in its pipe ---------------------------------------------


def carrier_protocol(carrier: str) -> str | None:
    """The ``<protocol>`` of a carrier (tcp, tcp-stunnel, udp); None: the sample's (tcp)."""
    return "udp" if carrier == "udp" else None


def _edgerq_max_connections(env: Env) -> int | None:
    sample = sample_setting("max_connections")
    if sample is not None and int(sample) < MAX_CONNECTIONS_NEEDED:
        note = (
            f"edgerq: max_connections raised from the sample's {sample} to "
            f"{2 * MAX_CONNECTIONS_NEEDED} so that the {MAX_CONNECTIONS_NEEDED}-connection "
            "scenario is not queued; every other setting is the shipped sample's"
        )
        if note not in env.notes:
            env.notes.append(note)
        return 2 * MAX_CONNECTIONS_NEEDED
    return None


def edgerq_path(carrier: str, label: str, *, before: bool = False) -> Callable[[Env], int]:
    """The setup of an SC and SP pair over ``carrier``; ``before``: running
    ``--before``'s edgerq. udp skips with "udp carrier not available" while
    ``edgerq check`` refuses it; tcp-stunnel skips without stunnel4 or openssl."""

    def setup(env: Env) -> int:
        sidecars = stunnel_sidecars(env) if carrier == "tcp-stunnel" else None
        tunnel = start_edgerq(
            env.stack,
            label,
            env.backend_port,
            max_connections=_edgerq_max_connections(env),
            protocol=carrier_protocol(carrier),
            sp_pipe_port=sidecars,
            source=env.before_source() if before else None,
            ends=env.ends,
        )
        return tunnel.service_port

    return setup


def _make_cert(env: Env, name: str) -> tuple[Path, Path]:
    """A throwaway self-signed P-256 certificate for ``name``: (key, certificate)."""
    openssl = env.tool("openssl")
    key, cert = env.stack.path("tls-key.pem"), env.stack.path("tls-cert.pem")
    subprocess.run(
        [
            openssl,
            *[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
            ],
            *["-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
            *["-keyout", str(key), "-out", str(cert)],
        ],
        check=True,
        capture_output=True,
    )
    key.chmod(0o600)
    return key, cert


def _stunnel_conf(body: str) -> str:
    # The global options of the project's stunnel/server.conf and client.conf.
    return (
        "foreground = yes\npid =\ndebug = 4\n"
        "socket = l:TCP_NODELAY=1\nsocket = r:TCP_NODELAY=1\n"
        "socket = l:SO_KEEPALIVE=1\nsocket = r:SO_KEEPALIVE=1\n\n[edgerq-pipe]\n" + body
    )


def stunnel_sidecars(env: Env, *, delay: bool = True) -> Callable[[int], int]:
    """For ``start_edgerq``'s ``sp_pipe_port``: a stunnel server beside the SC (on the
    SC's side, at its address) in front of the pipe listener, and a stunnel client
    beside the SP that verifies it; the SP dials the client's port. The certificate is
    made at once, and the missing tools said (Skip) before anything starts.
    ``delay``: ``delay = yes`` on both, as the project's ``stunnel/*.conf`` have it."""
    stunnel = env.tool("stunnel4")
    name = "stunnel-sc"
    key, cert = _make_cert(env, name)
    ends, stack = env.ends, env.stack
    resolve = "delay = yes\n" if delay else ""

    def sidecars(listener_port: int) -> int:
        server_port, client_port = ends.port("stunnel-server"), ends.port("stunnel-client")
        server_conf = stack.path("stunnel-server.conf")
        server_conf.write_text(
            _stunnel_conf(
                f"accept = {ends.sc_host}:{server_port}\nconnect = {LOCALHOST}:{listener_port}\n"
                f"{resolve}cert = {cert}\nkey = {key}\n"
            )
        )
        client_conf = stack.path("stunnel-client.conf")
        client_conf.write_text(
            _stunnel_conf(
                f"client = yes\naccept = {LOCALHOST}:{client_port}\n"
                f"connect = {ends.sc_host}:{server_port}\n{resolve}"
                f"verify = 2\nCAfile = {cert}\ncheckHost = {name}\n"
            )
        )
        server = stack.start("stunnel-server", ends.sc.argv([stunnel, str(server_conf)]))
        ends.sc.wait_port(server, ends.sc_host, server_port)
        client = stack.start("stunnel-client", ends.sp.argv([stunnel, str(client_conf)]))
        ends.sp.wait_port(client, LOCALHOST, client_port)
        return client_port

    return sidecars


# --- the other relays ---------------------------------------------------------------------


def path_socat(env: Env) -> int:
    socat = env.tool("socat")
    port = free_port()
    # backlog=1024: socat's default listen backlog of 5 drops SYNs when 16-64
    # clients connect at once, which measures the backlog rather than the relay.
    proc = env.stack.start(
        "socat",
        [
            socat,
            f"TCP-LISTEN:{port},bind={LOCALHOST},fork,reuseaddr,nodelay,backlog=1024",
            f"TCP:{LOCALHOST}:{env.backend_port},nodelay",
        ],
    )
    proc.wait_port(port)
    return port


def path_ssh(env: Env) -> int:
    sshd, ssh, keygen = env.tool("sshd"), env.tool("ssh"), env.tool("ssh-keygen")
    if not is_root():
        raise Skip("the throwaway sshd needs root")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    d = env.stack.path("ssh")
    d.mkdir(mode=0o700)
    for key in ("host_key", "user_key"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
            check=True,
            capture_output=True,
        )
    (d / "authorized_keys").write_text((d / "user_key.pub").read_text())
    (d / "authorized_keys").chmod(0o600)
    sshd_port, remote_port = free_port(), free_port()
    (d / "sshd_config").write_text(
        f"Port {sshd_port}\nListenAddress {LOCALHOST}\nHostKey {d}/host_key\n"
        f"PidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nAllowTcpForwarding yes\nGatewayPorts no\nX11Forwarding no\n"
        "PrintMotd no\nLogLevel ERROR\n"
    )
    env.stack.start("sshd", [sshd, "-D", "-e", "-f", str(d / "sshd_config")]).wait_port(sshd_port)
    client = env.stack.start(
        "ssh-R",
        [
            ssh,
            *["-N", "-i", str(d / "user_key"), "-p", str(sshd_port)],
            *["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"],
            *["-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR"],
            *["-R", f"{remote_port}:{LOCALHOST}:{env.backend_port}"],
            f"{getpass.getuser()}@{LOCALHOST}",
        ],
    )
    client.wait_port(remote_port)
    return remote_port


PATH_SETUP: dict[str, Callable[[Env], int]] = {
    "edgerq-tcp": edgerq_path("tcp", "tcp"),
    "edgerq-tcp-stunnel": edgerq_path("tcp-stunnel", "stunnel"),
    "edgerq-udp": edgerq_path("udp", "udp"),
    "edgerq-tcp-before": edgerq_path("tcp", "tcp-before", before=True),
    "edgerq-udp-before": edgerq_path("udp", "udp-before", before=True),
    "socat": path_socat,
    "ssh-R": path_ssh,
}
PATH_TITLES = {
    "direct": "direct",
    "edgerq-tcp": "edgerq tcp",
    "edgerq-tcp-stunnel": "edgerq tcp + stunnel",
    "edgerq-udp": "edgerq udp",
    "edgerq-tcp-before": "edgerq tcp (before)",
    "edgerq-udp-before": "edgerq udp (before)",
    "socat": "socat",
    "ssh-R": "ssh -R",
}
ALL_PATHS = ("edgerq-tcp", "edgerq-tcp-stunnel", "edgerq-udp", "socat", "ssh-R")
QUICK_PATHS = ("edgerq-tcp", "socat")
BEFORE_PATHS = {"edgerq-tcp": "edgerq-tcp-before", "edgerq-udp": "edgerq-udp-before"}
"""With ``--before REV``: the paths also measured with REV's edgerq, next to this one's."""
