"""The carrier adapters' share of a pipe: the one timer kept at the core's deadline.

A ``TcpPipe`` on a transport that never answers: what the core decides with
``now`` (handshake timeout, the abort of a close that does not finish) must
happen on the event loop's timer. Each test waits for the condition, with a
generous bound, never for a fixed time.
"""

from __future__ import annotations

import asyncio

import pytest

from edgerq import defaults
from edgerq.carriers.tcp import TcpPipe
from edgerq.pipe import MuxPipe, Role
from edgerq.protocol.handshake import ConsumerHandshake
from edgerq.protocol.messages import GoawayCode


class SilentTransport(asyncio.Transport):
    """Takes what is written; close and abort are only noted (no connection_lost)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.closed = asyncio.Event()
        self.aborted = asyncio.Event()

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.9", 9)}.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True
        self.closed.set()

    def abort(self) -> None:
        self.closing = True
        self.aborted.set()


class Owner:
    def __init__(self) -> None:
        self.closed: list[str] = []

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        raise AssertionError("nobody authenticated")

    def pipe_register(self, pipe: MuxPipe, uuids: object) -> list[object]:
        return []

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        self.closed.append(reason)


def test_a_peer_that_never_says_hello_is_closed_at_the_handshake_timeout() -> None:
    async def run() -> None:
        owner = Owner()
        pipe = TcpPipe(Role.CONSUMER, ConsumerHandshake(b"k"), owner, handshake_timeout=0.05)
        transport = SilentTransport()
        pipe.connection_made(transport)
        await asyncio.wait_for(transport.closed.wait(), 10)
        assert pipe.closing and pipe.close_reason == "handshake not completed in time"
        assert b"handshake not completed in time" in transport.written  # the GOAWAY
        pipe.connection_lost(None)
        assert owner.closed == ["handshake not completed in time"]

    asyncio.run(run())


def test_a_close_that_does_not_finish_is_aborted_after_close_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(defaults, "CLOSE_TIMEOUT", 0.05)

    async def run() -> None:
        pipe = TcpPipe(Role.CONSUMER, ConsumerHandshake(b"k"), Owner())
        transport = SilentTransport()
        pipe.connection_made(transport)
        pipe.close(GoawayCode.SHUTDOWN, "SC shutting down")
        assert transport.closing and not transport.aborted.is_set()
        await asyncio.wait_for(transport.aborted.wait(), 10)  # the peer never let it finish
        assert pipe.close_reason == "SC shutting down"

    asyncio.run(run())
