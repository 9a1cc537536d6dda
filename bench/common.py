"""Shared pieces of the benchmarks: the machine, its tools, the code measured.

Processes live in ``bench.procs``, edgerq's configs and commands in
``bench.daemons``, the paths compared in ``bench.paths``, what a run shows and
writes in ``bench.report``, the tools' shared options in ``bench.cli``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.procs import log

# Imported from here by the fault suite (tests/fault/report.py) and by
# tests/integration/test_loss.py, which record their figures with the same provenance.
from bench.report import provenance_line, write_json

__all__ = ["provenance_line", "write_json"]

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


class Skip(Exception):
    """A path or tool that cannot be had on this machine; the message says why."""


def is_root() -> bool:
    return os.geteuid() == 0


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


# --- the code measured --------------------------------------------------------------------


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
