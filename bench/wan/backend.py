"""The service behind the SP in the WAN bench: ``python -m bench.wan.backend PORT``.

A line protocol on one connection, as many requests as the client likes:
``N\\n`` answers N bytes; ``-1\\n`` streams bytes until the client closes
(the bulk transfer). Prints ``listening on PORT`` once it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

CHUNK = b"x" * 65536


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError):
        while line := await reader.readline():
            size = int(line)
            if size < 0:
                while True:
                    writer.write(CHUNK)
                    await writer.drain()
            while size > 0:
                part = CHUNK[: min(size, len(CHUNK))]
                writer.write(part)
                size -= len(part)
                await writer.drain()
            await writer.drain()
    writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, backlog=1024)
    print(f"listening on {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(int(sys.argv[1])))
