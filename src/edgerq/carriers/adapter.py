"""``CarrierPipe``: what every carrier's pipe adapter shares around the sans-I/O core.

A carrier adapter (``carriers.tcp.TcpPipe``, ``carriers.quic.pipe.QuicPipe``)
owns the connection; ``CarrierPipe`` gives it what both need around
``pipe.connection.PipeConnection``: the owner's callbacks for the core's events, the
one asyncio timer kept at the core's ``next_deadline()`` (the clock passed in
is ``time.monotonic()``), the ``closed`` future, and the ``MuxPipe`` methods
the daemons call. The two adapters do not inherit from each other; each
supplies only how frames leave (``_flush``) and how its connection is closed,
aborted and refused.
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuid_mod
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TypeVar, cast

from edgerq.errors import ProtocolError
from edgerq.pipe.connection import PipeConnection
from edgerq.pipe.events import (
    AbortTransport,
    Authenticated,
    CloseTransport,
    OpenRequested,
    PipeEvent,
    Refusal,
    RegisteredReceived,
    RegisterReceived,
    Role,
    State,
)
from edgerq.pipe.interface import ConsumerOwner, ProviderOwner
from edgerq.pipe.outbox import Outbox
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.status import PipeStatus
from edgerq.pipe.stream import OpenRefused, Stream, StreamSink
from edgerq.protocol.messages import GoawayCode, Open

P = TypeVar("P", bound="CarrierPipe")
Owner = ConsumerOwner | ProviderOwner


def build_pipe(adapter: Callable[[PipeSettings, Owner], P], owner: Owner) -> P:
    """A new pipe of a carrier's ``adapter`` class for ``owner``, with the owner's
    settings of now; the owner is told of it (``pipe_created``)."""
    pipe = adapter(owner.pipe_settings(), owner)
    owner.pipe_created(pipe)
    return pipe


class CarrierPipe(ABC):
    """A ``PipeConnection`` on a live connection: what the tcp and quic adapters share."""

    carrier = "?"
    stream_id_step = 1
    """Stream ids the SC allocates: 1, 2, 3, ... (QUIC: 1, 5, 9, ..., its own stream ids)."""
    wake_once = False
    """``_flush`` takes all the core queued: the core need not wake it again until then
    (``_flush`` clears the core's ``woken``). False: woken for every frame queued."""

    def __init__(
        self, settings: PipeSettings, owner: ConsumerOwner | ProviderOwner, outbox: Outbox
    ) -> None:
        self.owner = owner
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False
        self.core = PipeConnection(
            settings,
            outbox,
            now=time.monotonic(),
            emit=self._event,
            wake=self._waker(),
            wake_once=self.wake_once,
            on_limit=owner.pipe_limit_hit,
            stream_id_step=self.stream_id_step,
        )

    def __str__(self) -> str:
        return str(self.core)

    # --- what the carrier supplies ----------------------------------------------------

    @abstractmethod
    def _connected(self) -> bool:
        """A connection exists to write to (else there is nothing to close)."""

    def _waker(self) -> Callable[[], object]:
        """What the core calls when it queued frames (its ``wake``)."""
        return self._schedule_flush

    @abstractmethod
    def _flush(self) -> None:
        """Write what the core queued (called once per loop iteration at most)."""

    @abstractmethod
    def _close_transport(self) -> None:
        """Write what is queued, then close the connection."""

    @abstractmethod
    def _abort_transport(self) -> None:
        """Cut the connection now; ``_lost`` follows (at once or from the carrier)."""

    @abstractmethod
    def _refuse(self, refusal: Refusal) -> None:
        """Turn the connection away before the handshake."""

    # --- shared glue -----------------------------------------------------------------------

    def _start(self) -> None:
        """The connection is up: admit it (SC), then start the handshake."""
        self.core.connected()
        if self.core.role is Role.CONSUMER:
            refusal = cast(ConsumerOwner, self.owner).pipe_admit(self)
            if refusal is not None:
                self._refuse(refusal)
                return
        self.core.start(time.monotonic())
        self._sync_timer()

    def _event(self, event: PipeEvent) -> None:
        owner = self.owner
        if isinstance(event, Authenticated):
            self._sync_timer()
            owner.pipe_authenticated(self)
        elif isinstance(event, RegisterReceived):
            results = cast(ConsumerOwner, owner).pipe_register(self, event.uuids)
            self.core.send_registered(results)
        elif isinstance(event, RegisteredReceived):
            cast(ProviderOwner, owner).pipe_registered(self, event.results)
        elif isinstance(event, OpenRequested):
            cast(ProviderOwner, owner).pipe_open(self, event.request)
        elif isinstance(event, CloseTransport):
            self._close_transport()
        elif isinstance(event, AbortTransport):
            self._abort_transport()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _sync_timer(self) -> None:
        """Keep the one timer at the core's next deadline."""
        deadline = self.core.next_deadline()
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            delay = max(0.0, deadline - time.monotonic())
            self._timer = self._loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.core.handle_timer(time.monotonic())
        self._sync_timer()

    def _lost(self, reason: str) -> None:
        """The connection is gone (``reason`` unless the pipe already has one)."""
        if self.closed.done():
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        reason = self.core.connection_lost(reason)
        self.closed.set_result(reason)
        self.owner.pipe_closed(self, reason)

    # --- the MuxPipe interface ------------------------------------------------------------

    @property
    def id(self) -> int:
        return self.core.id

    @property
    def name(self) -> str:
        return self.core.name

    @property
    def peer(self) -> str:
        return self.core.peer

    @property
    def state(self) -> State:
        return self.core.state

    @property
    def authenticated(self) -> bool:
        return self.core.authenticated

    @property
    def registered(self) -> bool:
        return self.core.registered

    @property
    def draining(self) -> bool:
        """No new streams here (either side said GOAWAY DRAINING, or it closes)."""
        return self.core.state >= State.DRAINING

    @property
    def closing(self) -> bool:
        return self.core.state >= State.CLOSING

    @property
    def refused(self) -> bool:
        return self.core.refusal is not None

    @property
    def paused(self) -> bool:
        return self.core.paused

    @property
    def close_reason(self) -> str:
        return self.core.close_reason

    @property
    def error(self) -> ProtocolError | None:
        return self.core.error

    @property
    def last_heard(self) -> float:
        """``time.monotonic()`` when a frame last arrived (heartbeats included)."""
        return self.core.last_heard

    @property
    def streams(self) -> dict[int, Stream]:
        return self.core.streams

    def set_limits(self, *, max_streams: int, control_backlog: int, pipe_buffer: int) -> None:
        self.core.set_limits(
            max_streams=max_streams, control_backlog=control_backlog, pipe_buffer=pipe_buffer
        )

    def status(self) -> PipeStatus:
        return self.core.status()

    def open_stream(
        self,
        service: uuid_mod.UUID,
        *,
        window: int,
        max_frame: int,
        client: str,
        sink: StreamSink,
        destination: str = "",
    ) -> Stream:
        """SC side: open a stream to ``service``; its sink hears the SP's answer.

        ``client`` and ``destination`` are the client's and the SC's ``host:port``.
        """
        return self.core.open_stream(
            service,
            window=window,
            max_frame=max_frame,
            client=client,
            sink=sink,
            destination=destination,
        )

    def accept_stream(self, request: Open) -> Stream:
        return self.core.accept_stream(request)

    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None:
        self.core.answer_open(stream, failure)

    def send_raw(self, data: bytes) -> None:
        self.core.send_raw(data)

    def send_data(self, stream_id: int, data: bytes, max_frame: int) -> None:
        """Queue ``data`` as DATA frames of ``stream_id``, whatever its credit (a stream's
        own ``send`` keeps to it: this is for tests that play a peer)."""
        self.core.send_data(stream_id, data, max_frame)

    def drain(self, reason: str) -> None:
        """Tell the peer no new streams will be taken here; open ones go on."""
        if not self.closed.done():
            self.core.drain(reason)

    def close(self, code: GoawayCode = GoawayCode.NORMAL, reason: str = "closing") -> None:
        """Say GOAWAY with ``reason`` and close once it is written (abort after CLOSE_TIMEOUT)."""
        if self._connected():
            self.core.close(code, reason, time.monotonic())
            self._sync_timer()

    def abort(self, reason: str = "", error: ProtocolError | None = None) -> None:
        """Cut the pipe now (no GOAWAY); ``reason`` and ``error`` say why."""
        self.core.abort(reason, error)
        self._sync_timer()

    def pause_writing(self) -> None:
        self.core.pause_writing()

    def resume_writing(self) -> None:
        self.core.resume_writing()
