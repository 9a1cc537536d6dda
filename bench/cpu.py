"""CPU time spent by a process and everything it forked, read from /proc.

The benchmark starts each relay in a session of its own (``Stack.start``), so a
session id names the relay with all its helpers: socat's per-connection
children, sshd's session process. A session's CPU time is the user + system
time of its live processes plus what they collected from children that have
already exited (``cutime``, ``cstime``), so nothing is counted twice or lost.
"""

from __future__ import annotations

import os
from pathlib import Path

TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None  # gone since the listing
    # the command name (field 2) may hold spaces and parentheses: split after its end
    return text.rsplit(")", 1)[1].split()


def session_cpu_seconds(session: int) -> float:
    """CPU seconds of every process in ``session``, and of its reaped children."""
    ticks = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fields = _stat_fields(pid)
        # fields[0] is the state (stat field 3); session is field 6, utime..cstime 14..17
        if fields is None or int(fields[3]) != session:
            continue
        ticks += sum(int(x) for x in fields[11:15])
    return ticks / TICKS_PER_SECOND
