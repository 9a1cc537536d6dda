"""Operating-system limits a daemon checks or raises at start (no asyncio).

- ``RLIMIT_NOFILE``: every tunneled connection costs the SC one descriptor and
  the SP one; the usual soft limit of 1024 caps a daemon at about a thousand
  connections, and past it uvloop accepts and at once closes each new one (a
  reset the client cannot tell from a refusal, with no log line). Both daemons
  raise the soft limit to the hard one at start.
- ``net.core.somaxconn`` silently caps the backlog a service port asks for.
"""

from __future__ import annotations

import logging
import resource
from pathlib import Path

log = logging.getLogger("edgerq")

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns (soft, hard) in force.
    Logs the change, or why there was none worth making."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        log.info("open files limit (RLIMIT_NOFILE): %s", _show(soft))
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError) as exc:
        log.warning(
            "open files limit (RLIMIT_NOFILE) stays at %s: cannot raise it to the hard "
            "limit %s: %s; at most about that many connections can be open at once",
            _show(soft),
            _show(hard),
            exc,
        )
        return soft, hard
    log.info("open files limit (RLIMIT_NOFILE) raised from %s to %s", _show(soft), _show(hard))
    return hard, hard


class OpenFilesWatch:
    """Warns (once per ``interval`` s) when open connections near the open files
    limit: past it uvloop resets each new client with no log line of its own."""

    HEADROOM = 0.9
    INTERVAL = 10.0

    def __init__(self, limit: int | None = None) -> None:
        if limit is None:
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        self.limit = limit
        self.warn_at = (
            None if limit == resource.RLIM_INFINITY else max(1, int(limit * self.HEADROOM))
        )
        self._next_warning = 0.0
        self.near = 0
        """Clients accepted near the limit since the last warning."""

    def check(self, open_now: int, now: float) -> tuple[bool, str | None]:
        """Called as a client is accepted, with the connections open: (near the
        limit?, the warning to log when one is due)."""
        if self.warn_at is None or open_now < self.warn_at:
            return False, None
        self.near += 1
        if now < self._next_warning:
            return True, None
        self._next_warning = now + self.INTERVAL
        near, self.near = self.near, 0
        return True, (
            f"{open_now} connections open, near the open files limit (RLIMIT_NOFILE "
            f"{self.limit}; {near} client(s) accepted this close to it): past it new "
            "clients are reset without a log line. Raise the hard limit (ulimit -n, "
            "systemd LimitNOFILE=, docker --ulimit nofile=)"
        )


def _show(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def somaxconn() -> int | None:
    """The kernel's cap on a listen backlog (None when it cannot be read: not Linux)."""
    try:
        return int(SOMAXCONN.read_text().strip())
    except (OSError, ValueError):
        return None


def effective_backlog(wanted: int) -> int:
    """The backlog a ``listen(wanted)`` gets (the kernel caps it at somaxconn)."""
    cap = somaxconn()
    return wanted if cap is None else min(wanted, cap)


def describe_backlog(wanted: int) -> str:
    """The listen backlog in force, and why when the kernel capped it (for a log line)."""
    effective = effective_backlog(wanted)
    if effective < wanted:
        return (
            f"{effective} (listen_backlog {wanted} is capped by "
            f"net.core.somaxconn = {effective}; raise that sysctl for more)"
        )
    return str(effective)
