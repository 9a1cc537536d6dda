"""Carriers: how a pipe travels between SP and SC.

Each carrier offers ``listen(listener, make_pipe)`` (SC side) and
``dial(pipe, make_pipe, timeout)`` (SP side, an async context manager) and
hands the daemons ``MuxPipe`` objects; no daemon code depends on the carrier.
"""

from __future__ import annotations

from types import ModuleType


def carrier(name: str) -> ModuleType:
    """The module implementing carrier ``name`` (``tcp`` or ``udp``)."""
    if name == "tcp":
        from edgerq.carriers import tcp

        return tcp
    if name == "udp":
        from edgerq.carriers import quic

        return quic
    raise ValueError(f"unknown carrier {name!r}")
