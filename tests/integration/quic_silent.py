"""QUIC clients that connect to an SC and never say HELLO (half-open pipes).

Usage: ``python quic_silent.py PORT COUNT CONNECT_WAIT PATIENCE``; prints one line
per client: ``not answered`` (the SC dropped it at its first datagram), or the
reason the SC gave when it closed the connection. Run as a process of its own so
the clients' sockets cannot outlive a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import sys
from typing import Any

from qh3.asyncio.client import connect
from qh3.asyncio.protocol import QuicConnectionProtocol
from qh3.quic import events
from qh3.quic.configuration import QuicConfiguration


class Watch(QuicConnectionProtocol):
    reason = "still open"

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.ConnectionTerminated):
            self.reason = event.reason_phrase or f"error {event.error_code:#x}"


async def one(port: int, connect_wait: float, patience: float) -> str:
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=["edgerq/1"], verify_mode=ssl.CERT_NONE
    )
    manager = connect(
        "127.0.0.1", port, configuration=configuration, create_protocol=Watch, wait_connected=False
    )
    protocol: Any = await manager.__aenter__()
    try:
        await asyncio.wait_for(protocol.wait_connected(), connect_wait)
    except (TimeoutError, ConnectionError):
        return "not answered"
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(protocol.wait_closed(), patience)
    return str(protocol.reason)


async def main(port: int, count: int, connect_wait: float, patience: float) -> None:
    outcomes = await asyncio.gather(*(one(port, connect_wait, patience) for _ in range(count)))
    print("\n".join(outcomes), flush=True)
    os._exit(0)  # the dropped clients' connections need no goodbye


if __name__ == "__main__":
    port, count, connect_wait, patience = sys.argv[1:5]
    asyncio.run(main(int(port), int(count), float(connect_wait), float(patience)))
