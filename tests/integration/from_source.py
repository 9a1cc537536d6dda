"""Run an edgerq daemon whose outgoing sockets leave from one loopback address.

Usage (as a ``Daemon`` prefix): ``python from_source.py 127.0.0.2 python -m edgerq ARGS``.
All of 127.0.0.0/8 reaches the loopback interface on Linux, so one machine can
play SPs at several source addresses; the SC tells them apart as it would
tell apart SPs on different hosts.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

from edgerq import cli


def bound_to(source: str) -> None:
    original_bind = socket.socket.bind
    original_create_connection = asyncio.BaseEventLoop.create_connection

    def bind(self: socket.socket, address: Any) -> None:
        # qh3 binds its dual-stack UDP socket to "::"; pick the v4-mapped source instead.
        if self.family == socket.AF_INET6 and address[0] == "::":
            address = (f"::ffff:{source}", *address[1:])
        original_bind(self, address)

    async def create_connection(self: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("local_addr", (source, 0))
        return await original_create_connection(self, *args, **kwargs)

    socket.socket.bind = bind  # type: ignore[method-assign,assignment]
    asyncio.BaseEventLoop.create_connection = create_connection  # type: ignore[method-assign]
    cli.install_uvloop = lambda: "asyncio"  # uvloop's sockets would not pass through here


def main() -> int:
    source = sys.argv[1]
    rest = sys.argv[2:]
    args = rest[rest.index("edgerq") + 1 :]  # drop "python -m edgerq"
    bound_to(source)
    return cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
