"""The SP's connect to a service, per stream: answered on success, on a refusal
and on a timeout, each with the reason the SC is given."""

from __future__ import annotations

import asyncio
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest

from edgerq.config import load_provider
from edgerq.pipe.stream import Stream
from edgerq.protocol.messages import OpenFailure
from edgerq.runtime.relay import LocalConnection
from edgerq.sp.dialer import ProviderPipe
from tests.unit.fakes import FakePipe, Writer

UUID = "11111111-2222-3333-4444-555555555555"


def setup(tmp_path: Path, port: int) -> tuple[ProviderPipe, Any]:
    path = tmp_path / "provider.xml"
    path.write_text(
        "<service_provider><pipes><pipe><hostname>127.0.0.1</hostname><port>9</port>"
        f"<services><service><uuid>{UUID}</uuid><name>web</name>"
        f"<hostname>127.0.0.1</hostname><port>{port}</port></service></services>"
        "</pipe></pipes></service_provider>"
    )
    config = load_provider(path, env={}).pipes[0]
    return ProviderPipe(config), config.services[0]


async def connect(pp: ProviderPipe, service: Any) -> tuple[FakePipe, LocalConnection]:
    pipe, conn = FakePipe(), LocalConnection(4096)
    stream = Stream(Writer(), 1, uuid.UUID(UUID), window=65536, max_frame=4096)
    pp.streams.connect(pipe, stream, conn, service)  # type: ignore[arg-type]
    await asyncio.wait_for(pipe.answered.wait(), 10)
    return pipe, conn


def test_a_reachable_service_is_answered_ok(tmp_path: Path) -> None:
    async def main() -> None:
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pp, service = setup(tmp_path, port)
        pipe, conn = await connect(pp, service)
        assert pipe.answers == [None]
        assert conn.transport is not None
        conn.transport.abort()
        server.close()

    asyncio.run(main())


def test_a_refused_connect_is_answered_with_why(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: refused

        async def main() -> None:
            pp, service = setup(tmp_path, port)
            pipe, conn = await connect(pp, service)
            [failure] = pipe.answers
            assert failure is not None and failure.code is OpenFailure.CONNECT_REFUSED
            assert conn.done

        asyncio.run(main())


def test_a_connect_that_hangs_times_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        async def never(*args: object, **kwargs: object) -> None:
            await asyncio.Event().wait()

        monkeypatch.setattr(loop, "create_connection", never)
        pp, service = setup(tmp_path, 9)
        pp.streams.connect_timeout = 0.05
        pipe, _ = await connect(pp, service)
        [failure] = pipe.answers
        assert failure is not None and failure.code is OpenFailure.CONNECT_TIMEOUT
        assert failure.reason == "connect timed out"

    asyncio.run(main())
