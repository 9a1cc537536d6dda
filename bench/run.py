"""``make bench``: edgerq beside direct, socat and ``ssh -R``, all to one nginx on loopback.

Every scenario runs ``wrk`` against each path in rounds interleaved with direct
(direct, path, direct, path, ...); a path's figure is the median of its rounds
and its ratio is that median over the median of the direct rounds paired with
it, so each ratio is measured in the same minute as its baseline.

    python -m bench.run [--duration 5] [--rounds 3] [--quick] [--paths a,b]
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import http.client
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import (
    DIRTY_REFUSAL,
    LOCALHOST,
    RESULTS,
    Skip,
    Stack,
    ensure_tools,
    free_port,
    interruptible,
    is_root,
    log,
    machine,
    markdown_table,
    missing_reason,
    provenance,
    provenance_line,
    sample_setting,
    start_edgerq,
    write_atomic,
    write_json,
)
from bench.cpu import session_cpu_seconds

SMALL_BODY = 100
LARGE_BODY = 1024 * 1024
DEBIAN_TOOLS = {
    "nginx": "nginx",
    "wrk": "wrk",
    "socat": "socat",
    "sshd": "openssh-server",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
}


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    path: str
    connections: int
    close: bool = False

    @property
    def bulk(self) -> bool:
        return self.path == "/large"


SCENARIOS = (
    Scenario("small-ka-1", "small GET keep-alive, 1 conn", "/small", 1),
    Scenario("small-ka-16", "small GET keep-alive, 16 conns", "/small", 16),
    Scenario("small-ka-64", "small GET keep-alive, 64 conns", "/small", 64),
    Scenario("small-close-16", "small GET Connection: close, 16 conns", "/small", 16, close=True),
    Scenario("large-4", "1 MiB GET keep-alive, 4 conns", "/large", 4),
)
MAX_CONNECTIONS_NEEDED = max(s.connections for s in SCENARIOS)

ALL_PATHS = ("edgerq-tcp", "edgerq-tcp-stunnel", "edgerq-udp", "socat", "ssh-R")
QUICK_PATHS = ("edgerq-tcp", "socat")


# --- wrk -------------------------------------------------------------------------------

_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if m is None:
        raise ValueError(f"cannot read a wrk latency: {text!r}")
    return float(m.group(1)) * _UNITS_TIME[m.group(2)]


@dataclass
class WrkResult:
    requests_per_s: float
    mb_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    error_text: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "req_s": round(self.requests_per_s, 1),
            "mb_s": round(self.mb_per_s, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "requests": self.requests,
            "errors": self.errors,
            "error_text": self.error_text,
        }


def parse_wrk(out: str) -> WrkResult:
    def grab(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out}")
        return m

    rps = float(grab(r"^Requests/sec:\s+([\d.]+)").group(1))
    m = grab(r"^Transfer/sec:\s+([\d.]+)(B|KB|MB|GB|TB)")
    mb_s = float(m.group(1)) * _UNITS_BYTES[m.group(2)] / 1e6
    p50 = _ms(grab(r"^\s+50%\s+(\S+)").group(1))
    p99 = _ms(grab(r"^\s+99%\s+(\S+)").group(1))
    requests = int(grab(r"^\s+(\d+) requests in").group(1))
    errors, notes = 0, []
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock is not None:
        counts = [int(x) for x in sock.groups()]
        errors += sum(counts)
        if sum(counts):
            notes.append(sock.group(0))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx is not None:
        errors += int(non2xx.group(1))
        notes.append(non2xx.group(0))
    return WrkResult(rps, mb_s, p50, p99, requests, errors, "; ".join(notes))


def run_wrk(wrk: str, port: int, scenario: Scenario, duration: float) -> WrkResult:
    threads = 1 if scenario.connections < 2 else 2
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{scenario.connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
    ]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    argv.append(f"http://{LOCALHOST}:{port}{scenario.path}")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return parse_wrk(done.stdout)


# --- the backend and the paths ----------------------------------------------------------


def start_nginx(stack: Stack, nginx: str) -> int:
    port = free_port()
    root = stack.path("nginx")
    www = root / "www"
    for sub in ("www", "tmp", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (www / "small").write_bytes(b"x" * (SMALL_BODY - 1) + b"\n")
    (www / "large").write_bytes(os.urandom(LARGE_BODY))
    temp = root / "tmp"
    conf = root / "nginx.conf"
    conf.write_text(
        f"""
{"user root;" if is_root() else ""}
daemon off;
master_process on;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/logs/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;
    sendfile on;
    tcp_nodelay on;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen {LOCALHOST}:{port} backlog=4096;
        root {www};
        location = /small {{ }}
        location = /large {{ }}
        location / {{ return 404; }}
    }}
}}
"""
    )
    proc = stack.start(
        "nginx", [nginx, "-e", str(root / "logs" / "error.log"), "-p", str(root), "-c", str(conf)]
    )
    proc.wait_port(port)
    return port


def http_check(port: int) -> None:
    """One GET of each body through a path; raises if it does not arrive whole."""
    for path, size in (("/small", SMALL_BODY), ("/large", LARGE_BODY)):
        conn = http.client.HTTPConnection(LOCALHOST, port, timeout=10)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
        finally:
            conn.close()
        if response.status != 200 or len(body) != size:
            raise RuntimeError(
                f"GET {path} on :{port}: status {response.status}, {len(body)} bytes, "
                f"expected 200 with {size}"
            )


@dataclass
class Env:
    stack: Stack
    tools: dict[str, str]
    nginx_port: int
    notes: list[str] = field(default_factory=list)
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


def _edgerq_path(env: Env, carrier: str, before: bool = False) -> int:
    """An SC and SP pair over ``carrier``; ``before``: running ``--before``'s edgerq.
    udp skips with "udp carrier not available" while `edgerq check` refuses it."""
    tunnel = start_edgerq(
        env.stack,
        f"{carrier}-before" if before else carrier,
        env.nginx_port,
        max_connections=_edgerq_max_connections(env),
        protocol=None if carrier == "tcp" else carrier,
        source=env.before_source() if before else None,
    )
    return tunnel.service_port


def path_edgerq_tcp(env: Env) -> int:
    return _edgerq_path(env, "tcp")


def path_edgerq_udp(env: Env) -> int:
    return _edgerq_path(env, "udp")


def path_edgerq_tcp_before(env: Env) -> int:
    return _edgerq_path(env, "tcp", before=True)


def path_edgerq_udp_before(env: Env) -> int:
    return _edgerq_path(env, "udp", before=True)


def _make_cert(env: Env, name: str) -> tuple[Path, Path]:
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


def path_edgerq_stunnel(env: Env) -> int:
    stunnel = env.tool("stunnel4")
    name = "stunnel-sc"
    key, cert = _make_cert(env, name)

    def sidecars(listener_port: int) -> int:
        server_port, client_port = free_port(), free_port()
        server_conf = env.stack.path("stunnel-server.conf")
        server_conf.write_text(
            _stunnel_conf(
                f"accept = {LOCALHOST}:{server_port}\nconnect = {LOCALHOST}:{listener_port}\n"
                f"delay = yes\ncert = {cert}\nkey = {key}\n"
            )
        )
        client_conf = env.stack.path("stunnel-client.conf")
        client_conf.write_text(
            _stunnel_conf(
                f"client = yes\naccept = {LOCALHOST}:{client_port}\n"
                f"connect = {LOCALHOST}:{server_port}\ndelay = yes\n"
                f"verify = 2\nCAfile = {cert}\ncheckHost = {name}\n"
            )
        )
        env.stack.start("stunnel-server", [stunnel, str(server_conf)]).wait_port(server_port)
        env.stack.start("stunnel-client", [stunnel, str(client_conf)]).wait_port(client_port)
        return client_port

    tunnel = start_edgerq(
        env.stack,
        "stunnel",
        env.nginx_port,
        max_connections=_edgerq_max_connections(env),
        sp_pipe_port=sidecars,
    )
    return tunnel.service_port


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
            f"TCP:{LOCALHOST}:{env.nginx_port},nodelay",
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
            *["-R", f"{remote_port}:{LOCALHOST}:{env.nginx_port}"],
            f"{getpass.getuser()}@{LOCALHOST}",
        ],
    )
    client.wait_port(remote_port)
    return remote_port


PATH_SETUP: dict[str, Callable[[Env], int]] = {
    "edgerq-tcp": path_edgerq_tcp,
    "edgerq-tcp-stunnel": path_edgerq_stunnel,
    "edgerq-udp": path_edgerq_udp,
    "edgerq-tcp-before": path_edgerq_tcp_before,
    "edgerq-udp-before": path_edgerq_udp_before,
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
BEFORE_PATHS = {"edgerq-tcp": "edgerq-tcp-before", "edgerq-udp": "edgerq-udp-before"}
"""With ``--before REV``: the paths also measured with REV's edgerq, next to this one's."""


# --- measuring ----------------------------------------------------------------------------


def cpu_role(proc_name: str) -> str:
    """Whose CPU a benchmark process's time is: the SC, the SP, or the relay itself."""
    if proc_name.endswith("-sc"):
        return "SC"
    if proc_name.endswith("-sp"):
        return "SP"
    if proc_name.startswith("stunnel"):
        return "stunnel"
    return "ssh" if proc_name.startswith("ssh") else proc_name


Sessions = dict[str, list[int]]
"""CPU role -> the session ids (the processes' own pids) whose time is that role's."""


def cpu_by_role(sessions: Sessions) -> dict[str, float]:
    return {role: sum(session_cpu_seconds(s) for s in ids) for role, ids in sessions.items()}


@dataclass
class Cell:
    scenario: Scenario
    path: str
    rounds: list[WrkResult] = field(default_factory=list)
    direct_rounds: list[WrkResult] = field(default_factory=list)
    cpu_rounds: list[dict[str, float]] = field(default_factory=list)
    """CPU seconds each role spent in each round (same order as ``rounds``)."""

    @property
    def cpu_unit(self) -> str:
        return "MB" if self.scenario.bulk else "request"

    def cpu_per_unit(self) -> dict[str, float]:
        """Median CPU microseconds per request (per MB for bulk), by role and in total."""
        if not self.cpu_rounds:  # direct: no relay of ours to read
            return {}
        per_round: list[dict[str, float]] = []
        for result, cpu in zip(self.rounds, self.cpu_rounds, strict=True):
            units = result.requests * LARGE_BODY / 1e6 if self.scenario.bulk else result.requests
            if units <= 0:
                continue
            shares = {role: seconds * 1e6 / units for role, seconds in cpu.items()}
            shares["total"] = sum(shares.values())
            per_round.append(shares)
        if not per_round:
            return {}
        return {role: float(statistics.median(r[role] for r in per_round)) for role in per_round[0]}

    def cpu_text(self) -> str:
        shares = self.cpu_per_unit()
        if not shares:
            return ""
        total = shares.pop("total")
        if len(shares) == 1:
            return f"{total:.0f}"
        return " + ".join(f"{role} {v:.0f}" for role, v in shares.items()) + f" = {total:.0f}"

    @staticmethod
    def _median(results: list[WrkResult], attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in results))

    def median(self, attr: str) -> float:
        return self._median(self.rounds, attr)

    def direct_median(self, attr: str) -> float:
        return self._median(self.direct_rounds, attr)

    @property
    def metric(self) -> str:
        return "mb_per_s" if self.scenario.bulk else "requests_per_s"

    @property
    def ratio(self) -> float | None:
        if not self.direct_rounds:
            return None
        base = self.direct_median(self.metric)
        return self.median(self.metric) / base if base else None

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        out: dict[str, Any] = {
            "scenario": self.scenario.key,
            "path": self.path,
            "req_s": round(self.median("requests_per_s"), 1),
            "mb_s": round(self.median("mb_per_s"), 2),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "errors": self.errors,
            "ratio": None if ratio is None else round(ratio, 3),
            "rounds": [r.as_dict() for r in self.rounds],
        }
        if self.cpu_rounds:
            out["cpu_unit"] = self.cpu_unit
            out["cpu_us_per_unit"] = {k: round(v, 1) for k, v in self.cpu_per_unit().items()}
            out["cpu_s_rounds"] = [{k: round(v, 3) for k, v in c.items()} for c in self.cpu_rounds]
        if self.direct_rounds:
            out["p99_added_ms"] = round(self.median("p99_ms") - self.direct_median("p99_ms"), 3)
            out["direct_rounds"] = [r.as_dict() for r in self.direct_rounds]
        return out


def direct_cell(scenario: Scenario, cells: list[Cell]) -> Cell:
    """All direct rounds of a scenario (run paired with the paths) as one row."""
    rounds = [r for c in cells if c.scenario == scenario for r in c.direct_rounds]
    return Cell(scenario, "direct", rounds)


def measure(
    wrk: str,
    ports: dict[str, int],
    direct_port: int,
    scenarios: list[Scenario],
    rounds: int,
    duration: float,
    sessions: dict[str, Sessions],
) -> list[Cell]:
    cells: list[Cell] = []
    for scenario in scenarios:
        row = {name: Cell(scenario, name) for name in ports}
        cells.extend(row.values())
        for n in range(1, rounds + 1):
            for name, port in ports.items():
                for label, target, bucket in (
                    ("direct", direct_port, row[name].direct_rounds),
                    (name, port, row[name].rounds),
                ):
                    watched = sessions.get(label, {})
                    cpu_before = cpu_by_role(watched)
                    result = run_wrk(wrk, target, scenario, duration)
                    bucket.append(result)
                    if label != "direct":
                        after = cpu_by_role(watched)
                        row[name].cpu_rounds.append(
                            {role: after[role] - cpu_before[role] for role in after}
                        )
                    unit = (
                        f"{result.mb_per_s:8.1f} MB/s"
                        if scenario.bulk
                        else f"{result.requests_per_s:8.0f} req/s"
                    )
                    err = f"  ERRORS: {result.error_text}" if result.errors else ""
                    log(
                        f"  {scenario.key:<15} round {n}/{rounds} {label:<19} {unit}  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms{err}"
                    )
    return cells


# --- output -------------------------------------------------------------------------------


def table_rows(cells: list[Cell], scenarios: list[Scenario]) -> list[list[str]]:
    rows = []
    for scenario in scenarios:
        mine = [c for c in cells if c.scenario == scenario]
        if not mine:
            continue
        for cell in [direct_cell(scenario, mine), *mine]:
            ratio = cell.ratio
            p99_added = (
                f"{cell.median('p99_ms') - cell.direct_median('p99_ms'):+.2f}"
                if cell.direct_rounds
                else ""
            )
            rows.append(
                [
                    scenario.title,
                    PATH_TITLES[cell.path] + (f" ({cell.errors} errors)" if cell.errors else ""),
                    f"{cell.median('requests_per_s'):.0f}",
                    f"{cell.median('mb_per_s'):.1f}",
                    f"{cell.median('p50_ms'):.2f}",
                    f"{cell.median('p99_ms'):.2f}",
                    p99_added,
                    "1.00" if cell.path == "direct" else f"{ratio:.2f}" if ratio else "-",
                    cell.cpu_text(),
                ]
            )
    return rows


HEADER = [
    "scenario",
    "path",
    "req/s",
    "MB/s",
    "p50 ms",
    "p99 ms",
    "p99 added",
    "ratio",
    "CPU µs/req (/MB for 1 MiB)",
]


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = []
    previous = None
    for row in [HEADER, *rows]:
        if previous is not None and row[0] != previous and previous != HEADER[0]:
            lines.append("")
        shown = ["" if row[0] == previous else row[0], *row[1:]]
        previous = row[0]
        lines.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(shown, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)


def markdown(
    rows: list[list[str]], meta: dict[str, Any], skipped: dict[str, str], notes: list[str]
) -> str:
    m = meta["machine"]
    out = [
        *(
            ["**Dirty tree**: uncommitted changes were measured; no commit has this code.", ""]
            if meta.get("dirty")
            else []
        ),
        f"Measured {meta['date']} on {m['cores']} cores ({m['cpu_model']}), "
        f"Linux {m['kernel']}, Python {m['python']}, edgerq {meta['revision']} "
        f"({meta.get('build', 'build not recorded')}); "
        f"wrk, median of {meta['rounds']} rounds of {meta['duration_s']:g} s interleaved with "
        "direct; ratio = path / direct (req/s, MB/s for 1 MiB); CPU = user + system time the "
        "relay processes themselves spent per request (per MB for 1 MiB), median of the rounds.",
        "",
        *markdown_table(HEADER, rows),
    ]
    if skipped or notes:
        out.append("")
    for name, reason in skipped.items():
        out.append(f"- {PATH_TITLES[name]}: skipped ({reason})")
    for note in notes:
        out.append(f"- {note}")
    return "\n".join(out) + "\n"


def nagle_notes(cells: list[Cell]) -> list[str]:
    notes = []
    for cell in cells:
        if cell.scenario.bulk or cell.scenario.close or not cell.direct_rounds:
            continue
        p99, base = cell.median("p99_ms"), cell.direct_median("p99_ms")
        if 36.0 <= p99 <= 50.0 and base < 15.0 and cell.median("p50_ms") < 10.0:
            notes.append(
                f"{PATH_TITLES[cell.path]}, {cell.scenario.title}: p99 {p99:.1f} ms vs direct "
                f"{base:.1f} ms looks like Nagle + delayed ACK (~40 ms; "
                + (
                    "OpenSSH sets TCP_NODELAY only on interactive sessions)"
                    if cell.path == "ssh-R"
                    else "TCP_NODELAY missing on a hop)"
                )
            )
    return notes


def chart(cells: list[Cell], scenarios: list[Scenario], path: Path, title: str) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no chart"
    names = list(dict.fromkeys(c.path for c in cells))
    shown = [s for s in scenarios if any(c.scenario == s for c in cells)]
    everything = ["direct", *names]
    colours = {name: f"C{i}" for i, name in enumerate(everything)}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    for axis, group in ((top, names), (bottom, everything)):
        width = 0.8 / max(1, len(group))
        for i, name in enumerate(group):
            xs, values = [], []
            for j, scenario in enumerate(shown):
                row = [c for c in cells if c.scenario == scenario]
                cell = (
                    direct_cell(scenario, row)
                    if name == "direct"
                    else next((c for c in row if c.path == name), None)
                )
                if cell is None or not cell.rounds:
                    continue
                xs.append(j + (i - (len(group) - 1) / 2) * width)
                values.append((cell.ratio or 0.0) if axis is top else cell.median("p99_ms"))
            bars = axis.bar(xs, values, width, label=PATH_TITLES[name], color=colours[name])
            axis.bar_label(bars, fmt="%.2f" if axis is top else "%.3g", fontsize=7)
    for axis in (top, bottom):
        axis.set_xticks(range(len(shown)), [s.title for s in shown], fontsize=8)
        axis.grid(axis="y", alpha=0.3)
    top.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    top.set_ylabel("throughput / direct (higher is better)")
    top.set_title(title, fontsize=10)
    top.legend(fontsize=8)
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, ms (log scale; lower is better)")
    bottom.legend(fontsize=8)
    buf = path.with_name(path.name + ".tmp")
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    buf.replace(path)
    return None


# --- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, help="seconds per wrk round (default 5; quick 2)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per path and scenario (3)")
    p.add_argument(
        "--paths",
        help=f"comma-separated paths besides direct (default all: {','.join(ALL_PATHS)}; "
        f"quick: {','.join(QUICK_PATHS)})",
    )
    p.add_argument(
        "--scenarios",
        help=f"comma-separated scenarios (default all: {','.join(s.key for s in SCENARIOS)})",
    )
    p.add_argument("--quick", action="store_true", help="smoke test: 2 s rounds, fewer paths")
    p.add_argument(
        "--name", help="results file name under bench/results/ (default latest; quick: quick)"
    )
    p.add_argument(
        "--before",
        metavar="REV",
        help="also run edgerq tcp and udp from git revision REV, interleaved with this "
        "tree's (paths edgerq-tcp-before, edgerq-udp-before): a before/after in one "
        "sitting, for python -m bench.summary --before-after",
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="results directory")
    p.add_argument(
        "--allow-dirty",
        action="store_true",
        help="measure a tree with uncommitted changes (the results say so)",
    )
    args = p.parse_args(argv)
    if args.duration is None:
        args.duration = 2.0 if args.quick else 5.0
    if args.name is None:
        args.name = "quick" if args.quick else "latest"
    paths = args.paths.split(",") if args.paths else list(QUICK_PATHS if args.quick else ALL_PATHS)
    unknown = [x for x in paths if x not in PATH_SETUP]
    if unknown:
        p.error(f"unknown path(s) {unknown}; choose from {', '.join(PATH_SETUP)}")
    if args.before:
        paths += [BEFORE_PATHS[x] for x in list(paths) if x in BEFORE_PATHS]
    args.path_list = paths
    keys = args.scenarios.split(",") if args.scenarios else [s.key for s in SCENARIOS]
    by_key = {s.key: s for s in SCENARIOS}
    if any(k not in by_key for k in keys):
        p.error(f"unknown scenario in {keys}; choose from {', '.join(by_key)}")
    args.scenario_list = [by_key[k] for k in keys]
    if args.rounds < 1 or args.duration < 1:
        p.error("--rounds and --duration must be at least 1")
    return args


def _shown(path: Path) -> str:
    cwd = Path.cwd()
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    prov = provenance()  # the code measured: the tree may change during the run
    if prov["dirty"] and not args.allow_dirty:
        log(DIRTY_REFUSAL)
        return 2
    revision = prov["revision"]
    before_commit = None
    if args.before:
        found = subprocess.run(
            ["git", "rev-parse", "--verify", f"{args.before}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if found.returncode != 0:
            log(f"--before {args.before}: not a commit of this repository")
            return 2
        before_commit = found.stdout.strip()
    tools = ensure_tools(DEBIAN_TOOLS)
    for needed in ("nginx", "wrk"):
        if needed not in tools:
            log(f"cannot benchmark: {missing_reason(needed, DEBIAN_TOOLS[needed])}")
            return 2
    skipped: dict[str, str] = {}
    with interruptible(), Stack() as stack:
        env = Env(stack, tools, start_nginx(stack, tools["nginx"]), before=before_commit)
        http_check(env.nginx_port)
        ports: dict[str, int] = {}
        sessions: dict[str, Sessions] = {}
        for name in args.path_list:
            started_before = len(stack.procs)
            try:
                port = PATH_SETUP[name](env)
                http_check(port)
                ports[name] = port
                sessions[name] = {}
                for proc in stack.procs[started_before:]:
                    sessions[name].setdefault(cpu_role(proc.name), []).append(proc.pid)
                log(f"path {name}: ready on :{port}")
            except Skip as exc:
                skipped[name] = str(exc)
                log(f"path {name}: skipped: {exc}")
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                skipped[name] = f"setup failed: {str(exc).splitlines()[0]}"
                log(f"path {name}: setup failed, skipped:\n{exc}")
        runs = len(args.scenario_list) * args.rounds * len(ports) * 2
        log(
            f"{runs} wrk runs of {args.duration:g} s "
            f"(about {runs * (args.duration + 0.3) / 60:.1f} min)"
        )
        cells = measure(
            tools["wrk"],
            ports,
            env.nginx_port,
            args.scenario_list,
            args.rounds,
            args.duration,
            sessions,
        )
        notes = env.notes + nagle_notes(cells)

    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "revision": revision,
        "commit": prov["commit"],
        "dirty": prov["dirty"],
        "build": prov.get("build", "unknown"),
        **(
            {"before": {"commit": before_commit, "revision": before_commit[:7]}}
            if before_commit
            else {}
        ),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "elapsed_s": round(time.time() - started, 1),
        "tools": {
            "wrk": "wrk -t1 (1 conn) / -t2, --latency; Connection: close via -H",
            "backend": "nginx, 1 worker, access_log off, sendfile",
        },
    }
    rows = table_rows(cells, args.scenario_list)
    print()
    print(provenance_line(prov))
    print(text_table(rows))
    for name, reason in skipped.items():
        print(f"skipped {PATH_TITLES[name]}: {reason}")
    for note in notes:
        print(f"note: {note}")
    results_dir: Path = args.results
    base = results_dir / args.name
    write_json(
        base.with_suffix(".json"),
        {
            **meta,
            "scenarios": {s.key: s.title for s in args.scenario_list},
            "skipped": skipped,
            "notes": notes,
            "results": [direct_cell(s, cells).as_dict() for s in args.scenario_list]
            + [c.as_dict() for c in cells],
        },
    )
    write_atomic(base.with_suffix(".md"), markdown(rows, meta, skipped, notes))
    problem = chart(
        cells,
        args.scenario_list,
        base.with_suffix(".png"),
        f"edgerq vs relays, ratio to direct — {meta['date']}, {meta['machine']['cores']} cores "
        f"{meta['machine']['cpu_model']}",
    )
    if problem:
        log(problem)
    wrote = [base.with_suffix(s) for s in (".json", ".md", ".png")]
    if problem:
        wrote.pop()
    print("wrote " + ", ".join(_shown(p) for p in wrote))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; processes stopped and temp files removed")
        sys.exit(130)
