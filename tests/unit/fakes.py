"""Fakes the unit tests share: a pipe owner, a stream's local end, what a stream
writes to, a pipe without a connection, qh3's connection and link, and two helpers
(frames_of, in_loop).

Each records what it is told, so a test asserts on what the code under test did.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgerq.labels import Limit, Outcome
from edgerq.pipe.interface import MuxPipe, Refusal
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.frames import FrameDecoder, FrameType
from edgerq.protocol.messages import Open, RegisterStatus


class Owner:
    """A pipe owner for either role (``ConsumerOwner`` and ``ProviderOwner``).

    ``settings`` is what new pipes are built with; ``refusal`` what ``pipe_admit``
    answers; ``on_open`` (if set) serves the SC's OPENs, else they are accepted."""

    def __init__(
        self,
        settings: PipeSettings | None = None,
        *,
        refusal: Refusal | None = None,
        register: RegisterStatus = RegisterStatus.ACCEPTED,
        on_open: Callable[[MuxPipe, Open], None] | None = None,
    ) -> None:
        self.settings = settings
        self.refusal = refusal
        self.register = register
        self.on_open = on_open
        self.created: list[MuxPipe] = []
        self.admitted: list[MuxPipe] = []
        self.authenticated: list[MuxPipe] = []
        self.closed: list[str] = []
        self.limits: list[Limit] = []
        self.offered: list[uuid.UUID] = []
        self.registered: list[tuple[uuid.UUID, RegisterStatus]] = []
        self.opens: list[Open] = []

    def pipe_settings(self) -> PipeSettings:
        assert self.settings is not None, "this owner builds no pipes (settings=None)"
        return self.settings

    def pipe_created(self, pipe: MuxPipe) -> None:
        self.created.append(pipe)

    def pipe_limit_hit(self, limit: Limit) -> None:
        self.limits.append(limit)

    def pipe_admit(self, pipe: MuxPipe) -> Refusal | None:
        self.admitted.append(pipe)
        return self.refusal

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        self.authenticated.append(pipe)

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid.UUID]
    ) -> list[tuple[uuid.UUID, RegisterStatus]]:
        self.offered += uuids
        return [(u, self.register) for u in uuids]

    def pipe_registered(
        self, pipe: MuxPipe, results: Sequence[tuple[uuid.UUID, RegisterStatus]]
    ) -> None:
        self.registered += results

    def pipe_open(self, pipe: MuxPipe, request: Open) -> None:
        self.opens.append(request)
        if self.on_open is not None:
            self.on_open(pipe, request)
        else:
            pipe.accept_stream(request)

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        self.closed.append(reason)


class Sink:
    """A stream's local end that records what the stream tells it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self.resets: list[tuple[str, Outcome]] = []
        self.credits = 0
        self.paused: list[bool] = []
        self.answers: list[OpenRefused | None] = []

    @property
    def reset(self) -> tuple[str, Outcome] | None:
        """The last reset, if any."""
        return self.resets[-1] if self.resets else None

    def on_data(self, data: bytes | memoryview) -> None:
        self.data += data

    def on_eof(self) -> None:
        self.eof = True

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        self.resets.append((reason, outcome))

    def on_credit(self) -> None:
        self.credits += 1

    def on_pipe_paused(self, paused: bool) -> None:
        self.paused.append(paused)

    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        assert not self.resets, "the answer comes before the reset of the same cause"
        self.answers.append(failure)


class Writer:
    """A stream's pipe as the stream sees it (a ``StreamWriter``): records what it is
    handed. Code that takes a ``Stream`` is given a real one over this, not a
    look-alike: compiled (mypyc) modules check that an argument is a ``Stream``."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.raw: list[bytes] = []
        self.forgotten: list[int] = []

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None:
        self.data.append(bytes(data))

    def send_raw(self, data: bytes) -> None:
        self.raw.append(data)

    def forget_stream(self, stream: Stream) -> None:
        self.forgotten.append(stream.id)

    def log_stream_error(self, stream: Stream, message: str) -> None:
        pass


@dataclass(eq=False)
class FakePipe:
    """What the daemons' parts read of a pipe (the registry, the gate, the connector),
    without a connection; records the OPEN answers it is given."""

    name: str = "fake"
    peer: str = "127.0.0.1:40000"
    streams: dict[int, Any] = field(default_factory=dict)
    closing: bool = False
    draining: bool = False
    authenticated: bool = False
    error: Exception | None = None
    last_heard: float = field(default_factory=time.monotonic)
    answers: list[OpenRefused | None] = field(default_factory=list)
    answered: asyncio.Event = field(default_factory=asyncio.Event)

    def answer_open(self, stream: object, failure: OpenRefused | None) -> None:
        self.answers.append(failure)
        self.answered.set()

    def __str__(self) -> str:
        return f"pipe '{self.name}' ({self.peer})"


class FakeQuic:
    """What a ``QuicPipe`` uses of qh3's ``QuicConnection``: records what is sent."""

    def __init__(self) -> None:
        self.sent: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.closed_with: str | None = None

    def send_stream_data(self, stream_id: int, data: bytes, end_stream: bool = False) -> None:
        self.sent.setdefault(stream_id, bytearray()).extend(data)
        if end_stream:
            self.ended.add(stream_id)

    def get_send_buffer_size(self, stream_id: int | None = None) -> int:
        return 0

    def close(self, error_code: int = 0, reason_phrase: str = "") -> None:
        self.closed_with = reason_phrase


class FakeLink:
    """What a ``QuicPipe`` uses of its asyncio glue (``quic.carrier.PipeProtocol``)."""

    def __init__(self, quic: FakeQuic | None = None) -> None:
        self.quic = quic or FakeQuic()
        self.is_client = False

    def transmit(self) -> None:
        pass

    def close_transport_later(self) -> None:
        pass


def frames_of(data: bytes | bytearray) -> list[tuple[FrameType, int, bytes]]:
    """The frames in ``data``, decoded: (type, stream id, payload)."""
    decoder = FrameDecoder()
    return [(FrameType(t), s, bytes(p)) for t, s, p in decoder.receive(bytes(data))]


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (no pytest plugin needed)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class SocketTransport:
    """A local socket's asyncio transport as a ``LocalConnection`` uses it: records
    what is written and how it ends (closed after an answer, or aborted)."""

    def __init__(
        self,
        peer: tuple[str, int] = ("203.0.113.9", 51000),
        local: tuple[str, int] = ("127.0.0.1", 8080),
    ) -> None:
        self.extra = {"peername": peer, "sockname": local}
        self.written = bytearray()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self.eof_written = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.extra.get(name, default)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.is_closing(), "written after the end"
        self.written += data
        self.writes.append(bytes(data))

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof_written = True

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def until(condition: Callable[[], bool], turns: int = 10000) -> None:
    """Let the loop run until ``condition`` holds (the memory carrier needs no timer)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")
