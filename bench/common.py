"""Shared pieces of the benchmark: processes, ports, tools, edgerq configs."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
SAMPLE_CONSUMER = REPO / "sc" / "consumer.xml"
SAMPLE_PROVIDER = REPO / "sp" / "provider.xml"
LOCALHOST = "127.0.0.1"
# Daemon log level: the readiness lines ("accepting pipes", "registered") are
# info; everything logged per stream or frame is debug, so info costs nothing.
DAEMON_LOG_LEVEL = "info"


class Skip(Exception):
    """A path or tool that cannot be had on this machine; the message says why."""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def is_root() -> bool:
    return os.geteuid() == 0


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


def which(binary: str) -> str | None:
    found = shutil.which(binary)
    if found is None:
        for directory in ("/usr/sbin", "/sbin", "/usr/local/sbin"):
            candidate = Path(directory) / binary
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    return found


_apt_updated = False


def ensure_tools(tools: dict[str, str]) -> dict[str, str]:
    """Find each binary (key), installing its Debian package (value) when missing.

    Installs only as root with apt-get available. Returns binary -> path for the
    binaries found; the missing ones are absent from the result.
    """
    global _apt_updated
    found = {b: p for b in tools if (p := which(b)) is not None}
    missing = sorted({tools[b] for b in tools if b not in found})
    if missing and is_root() and which("apt-get") is not None:
        log(f"installing {' '.join(missing)} with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]
        done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        if done.returncode != 0 and not _apt_updated:
            _apt_updated = True
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
            done = subprocess.run(cmd, env=env, capture_output=True, check=False)
        if done.returncode != 0:
            log(f"apt-get install failed: {done.stderr.decode(errors='replace').strip()[-500:]}")
        found = {b: p for b in tools if (p := which(b)) is not None}
    return found


def missing_reason(binary: str, package: str) -> str:
    if not is_root():
        return f"{binary} not found (install Debian's {package}; not root, so not installed)"
    return f"{binary} not found and apt-get could not install {package}"


def raise_nofile() -> tuple[int, int]:
    """Raise the soft file limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 0
    mem_kib = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    return {
        "cores": usable,
        "cpu_model": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def git_revision() -> str:
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev


def provenance() -> dict[str, Any]:
    """Which code made a figure: ``commit`` (full hash of HEAD), ``revision`` (``git
    describe --always``, with ``-dirty`` as ``--dirty`` would add it), ``dirty``
    (tracked files differ from that commit; results under bench/results/ do not
    count: they are outputs) and ``date`` (UTC).
    Take it when the run starts: the tree may change while it runs."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", "-C", str(REPO), *args], capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return {
        "commit": git("rev-parse", "HEAD") or "unknown",
        "revision": (git("describe", "--always") or "unknown") + ("-dirty" if changed else ""),
        "dirty": bool(changed),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "build": _build(),
    }


def _build() -> str:
    """How the edgerq the daemons run was built: ``pure Python`` or ``mypyc: ...``.
    The daemons are started with this interpreter, so they load what it would."""
    try:
        from edgerq import compiled
    except ImportError:
        return "unknown"
    return compiled.describe()


DIRTY_REFUSAL = (
    "refusing to measure: tracked files differ from the last commit (git status), so "
    "no commit would name the code measured. Commit first, or pass --allow-dirty: the "
    "results then say 'dirty tree'."
)


def provenance_line(prov: dict[str, Any]) -> str:
    """One line for a table's header: the commit, and a warning for a dirty tree."""
    line = f"edgerq {prov['commit'][:10]} ({prov['revision']}), {prov['date']}"
    if prov.get("build"):
        line += f", {prov['build']}"
    if prov["dirty"]:
        line += "; DIRTY TREE: uncommitted changes were measured, no commit has this code"
    return line


def write_atomic(path: Path, data: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    else:
        tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, data: object) -> None:
    write_atomic(path, json.dumps(data, indent=2) + "\n")


def markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table, one line each; the first column is shown only where it changes
    and every column after the second is right-aligned."""
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(header))) + "|",
    ]
    previous = None
    for row in rows:
        shown = ["" if row[0] == previous else row[0], *row[1:]]
        previous = row[0]
        lines.append("| " + " | ".join(shown) + " |")
    return lines


# --- processes ---------------------------------------------------------------------------


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

    def wait_log(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.log_text():
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r} after {timeout:g} s:\n{self.tail()}")
            time.sleep(0.05)

    def wait_port(self, port: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open(port):
            self.check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: port {port} not open after {timeout:g} s")
            time.sleep(0.05)


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


# --- edgerq -----------------------------------------------------------------------------


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
) -> str:
    """The shipped sample ``sc/consumer.xml`` with the ports (and given settings) replaced."""
    root = ET.parse(SAMPLE_CONSUMER).getroot()
    listener = root.find("listener")
    service = root.find("services/service")
    if listener is None or service is None:
        raise RuntimeError(f"{SAMPLE_CONSUMER}: no listener or service")
    _set(listener, "port", listener_port)
    if protocol is not None:
        _set(listener, "protocol", protocol)
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
    """The shipped sample ``sp/provider.xml`` pointed at the given pipe port and backend."""
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
    label: str,
    backend_port: int,
    *,
    max_connections: int | None = None,
    request_ttl: float | None = None,
    protocol: str | None = None,
    sp_pipe_port: Callable[[int], int] | None = None,
    source: Path | None = None,
) -> Tunnel:
    """Start an SC and an SP (in that order) relaying a service port to ``backend_port``.

    ``sp_pipe_port`` maps the SC's listener port to the port the SP dials (it
    may start something in between, such as the stunnel pair). ``source``: a
    ``src`` directory whose edgerq the daemons run instead of this one (another
    revision, measured beside this one).
    """
    try:
        import edgerq  # noqa: F401
    except ImportError as exc:
        raise Skip(f"edgerq is not importable by {sys.executable} ({exc})") from None
    listener_port, service_port = free_port(), free_port()
    sc_conf = stack.path(f"{label}-consumer.xml")
    sc_conf.write_text(
        consumer_config(
            listener_port,
            service_port,
            max_connections=max_connections,
            request_ttl=request_ttl,
            protocol=protocol,
        )
    )
    ok, why = edgerq_check(sc_conf)
    if not ok:
        if protocol is not None and protocol != "tcp":
            raise Skip(f"{protocol} carrier not available ({why})")
        raise RuntimeError(f"edgerq check {sc_conf}: {why}")
    pipe_settings = {}
    if protocol == "udp":
        # the SC generates its certificate once; the SP pins its fingerprint
        pipe_settings["server_fingerprint"] = sc_fingerprint(sc_conf)
    env = {"EDGERQ_AUTH_TOKEN": secrets.token_hex(16)}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    sc = stack.start(f"{label}-sc", edgerq_argv("sc", sc_conf), env)
    sc.wait_log("accepting pipes")
    sc.wait_port(service_port)
    dial = listener_port if sp_pipe_port is None else sp_pipe_port(listener_port)
    sp_conf = stack.path(f"{label}-provider.xml")
    sp_conf.write_text(
        provider_config(dial, backend_port, protocol=protocol, pipe_settings=pipe_settings)
    )
    sp = stack.start(f"{label}-sp", edgerq_argv("sp", sp_conf), env)
    sp.wait_log("registered", timeout=30.0)
    return Tunnel(sc, sp, listener_port, service_port)
