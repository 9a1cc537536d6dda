"""A pipe over a byte-stream carrier: handshake, heartbeats and multiplexed streams.

``MuxPipe`` is the asyncio protocol of one pipe connection (the ``tcp``
carrier). It runs the sans-IO handshake, then carries many ``Stream``s,
each with its own flow control. Frames produced in one loop iteration are
written together in a single system call. What the pipe means to each side
(registration at the SC, opening services at the SP) is left to a
``PipeOwner`` of its role: ``ConsumerOwner`` (the SC) or ``ProviderOwner`` (the SP).

Why this module is over 400 lines: ``MuxPipe`` is still both the protocol
engine (handshake, dispatch, streams, heartbeats, limits) and the tcp
transport, and ``carriers.quic_pipe.QuicPipe`` still subclasses it. Splitting
a sans-I/O engine (frames and ``now`` in, frames and events out) from thin
tcp and quic adapters is the remaining step of issue 13.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
import time
import uuid as uuid_mod
from collections.abc import Callable, Sequence
from enum import Enum
from typing import NamedTuple, Protocol, cast

from edgerq import defaults
from edgerq.budget import PipeBudget, granted_window
from edgerq.errors import (
    AuthError,
    LimitExceeded,
    ProtocolError,
    RemoteProtocolError,
    VersionError,
)
from edgerq.labels import Limit
from edgerq.protocol.frames import (
    HEADER,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameType,
    RawFrame,
)
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake
from edgerq.protocol.messages import (
    CodedReason,
    GoawayCode,
    Open,
    OpenFailure,
    Register,
    Registered,
    RegisterStatus,
    decode_open_ok,
    decode_ping,
    decode_window,
    encode_open_ok,
    encode_ping,
)
from edgerq.stream import OpenRefused, Stream, StreamSink

log = logging.getLogger("edgerq.pipe")

WRITE_HIGH_WATER = 256 * 1024
WRITE_LOW_WATER = 64 * 1024
MAX_PINGS_PER_INTERVAL = 32
"""PINGs a peer may send per heartbeat interval (it needs one): each costs us a PONG."""

_pipe_ids = itertools.count(1)
_DATA = int(FrameType.DATA)


class Role(Enum):
    CONSUMER = "sc"
    PROVIDER = "sp"


class Refusal(NamedTuple):
    """Why a new pipe is turned away before its handshake (see limits.PipeGate)."""

    code: GoawayCode
    reason: str


Admit = Callable[["MuxPipe"], Refusal | None]


def _no_limit_hit(limit: Limit) -> None:
    pass


class PipeOwner(Protocol):
    """What either daemon does with a pipe's life-cycle events."""

    def pipe_authenticated(self, pipe: MuxPipe) -> None: ...
    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None: ...


class ConsumerOwner(PipeOwner, Protocol):
    """The SC: it answers an SP's REGISTER."""

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid_mod.UUID]
    ) -> list[tuple[uuid_mod.UUID, RegisterStatus]]: ...


class ProviderOwner(PipeOwner, Protocol):
    """The SP: it learns what the SC accepted, and serves the SC's OPENs."""

    def pipe_registered(
        self, pipe: MuxPipe, results: Sequence[tuple[uuid_mod.UUID, RegisterStatus]]
    ) -> None: ...
    def pipe_open(self, pipe: MuxPipe, request: Open) -> None: ...


class MuxPipe(asyncio.Protocol):
    """One pipe: an authenticated, multiplexed, heart-beaten connection between SC and SP."""

    carrier = "tcp"

    def __init__(
        self,
        role: Role,
        handshake: ConsumerHandshake | ProviderHandshake,
        owner: ConsumerOwner | ProviderOwner,
        *,
        name: str = "",
        heartbeat_interval: float = defaults.HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = defaults.HEARTBEAT_TIMEOUT,
        handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT,
        admit: Admit | None = None,
        on_limit: Callable[[Limit], None] = _no_limit_hit,
        max_streams: int = defaults.STREAMS_PER_PIPE,
        control_backlog: int = defaults.CONTROL_BACKLOG,
        stream_window: int = defaults.STREAM_WINDOW,
        pipe_buffer: int = defaults.PIPE_BUFFER,
    ) -> None:
        self.id = next(_pipe_ids)
        self.role = role
        self.name = name
        self.peer = "?"
        self.owner = owner
        self._handshake: ConsumerHandshake | ProviderHandshake | None = handshake
        self._decoder = FrameDecoder()
        self._transport: asyncio.Transport | None = None
        self._out = bytearray()
        """Frames queued in this loop iteration, written together by ``_flush``."""
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()
        self.streams: dict[int, Stream] = {}
        self._next_stream_id = 1
        self.paused = False
        self.authenticated = False
        self.registered = False
        self.closing = False
        self.draining = False
        """No new streams on this pipe (either side said GOAWAY DRAINING)."""
        self.close_reason = ""
        self.error: ProtocolError | None = None
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._last_rx = time.monotonic()
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._handshake_timeout = handshake_timeout
        self.opened_at = time.monotonic()
        self.streams_total = 0
        self.unknown_stream_frames = 0
        self._admit = admit
        self.refused = False
        self.limit_hit = on_limit
        """Told every limit this pipe enforces (the daemon counts them)."""
        self._max_streams = max_streams
        self._streams_refused = 0
        self._control_backlog = control_backlog
        self._paused_control = 0
        """Bytes of control frames queued since the transport paused (the peer is not reading)."""
        self._pings = 0
        self.stream_window = stream_window
        """The most this end grants a stream the peer opens, whatever it asks (SP side)."""
        self.budget = PipeBudget(self, pipe_buffer)

    @property
    def last_heard(self) -> float:
        """``time.monotonic()`` when a frame last arrived (heartbeats included)."""
        return self._last_rx

    def __str__(self) -> str:
        who = f" '{self.name}'" if self.name else ""
        return f"pipe {self.id}{who} ({self.peer})"

    # --- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)
        self._start_handshake()

    def _start_handshake(self) -> None:
        if self._admit is not None:
            refusal = self._admit(self)
            if refusal is not None:
                self.refuse(refusal)
                return
        if isinstance(self._handshake, ProviderHandshake):
            self.send_raw(self._handshake.start())
        self._timer = self._loop.call_later(self._handshake_timeout, self._handshake_expired)

    def data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        try:
            frames = self._decoder.receive(data)
            if self._handshake is not None:
                frames = self._handshake_frames(frames)
            self._deliver(frames)
        except ProtocolError as exc:
            self.protocol_failure(exc)

    def protocol_failure(self, exc: ProtocolError) -> None:
        """Close the pipe for ``exc`` with the GOAWAY code that names it (any carrier)."""
        self.error = exc
        if isinstance(exc, VersionError):
            self._fail(GoawayCode.VERSION_MISMATCH, str(exc))
        elif isinstance(exc, AuthError):
            self._fail(GoawayCode.AUTH_FAILED, str(exc))
        elif isinstance(exc, LimitExceeded):
            self.limit_hit(exc.limit)
            self._fail(GoawayCode.LIMIT_EXCEEDED, str(exc))
        else:
            prefix = "" if self.authenticated else "not an edgerq pipe, or a broken one: "
            self._fail(GoawayCode.PROTOCOL_ERROR, f"{prefix}{exc}")

    def _deliver(self, frames: list[RawFrame]) -> None:
        """Dispatch frames; consecutive DATA frames of one stream reach it as one write."""
        run_id = 0
        run: list[bytes | memoryview] = []
        for ftype, stream_id, payload in frames:
            if ftype == _DATA:
                if stream_id != run_id and run:
                    self._deliver_data(run_id, run)
                    run = []
                run_id = stream_id
                run.append(payload)
                continue
            if run:
                self._deliver_data(run_id, run)
                run = []
            self._dispatch(Frame(FrameType(ftype), stream_id, bytes(payload)))
        if run:
            self._deliver_data(run_id, run)

    def _deliver_data(self, stream_id: int, chunks: list[bytes | memoryview]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self._unknown_stream(stream_id, "DATA")
            return
        stream.receive_data(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def eof_received(self) -> bool:
        self._shutdown(f"{self.role_peer} closed the connection")
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        reason = self.close_reason or (
            f"connection lost: {exc}" if exc else f"{self.role_peer} closed the connection"
        )
        self.closing = True
        self.close_reason = reason
        for stream in list(self.streams.values()):
            stream.receive_reset(f"pipe closed: {reason}", pipe_lost=True)
        self.streams.clear()
        self._out.clear()
        if not self.closed.done():
            self.closed.set_result(reason)
        self.owner.pipe_closed(self, reason)

    def pause_writing(self) -> None:
        self.paused = True
        for stream in self.streams.values():
            if stream.sink is not None:
                stream.sink.on_pipe_paused(True)

    def resume_writing(self) -> None:
        self.paused = False
        self._paused_control = 0
        for stream in list(self.streams.values()):
            if stream.sink is not None:
                stream.sink.on_pipe_paused(False)

    # --- sending -------------------------------------------------------------------

    @property
    def role_peer(self) -> str:
        return "SP" if self.role is Role.CONSUMER else "SC"

    def send_raw(self, data: bytes) -> None:
        if self.closing:
            return
        if self.paused:
            self._paused_control += len(data)
            if self._paused_control > self._control_backlog:
                self._control_backlog_exceeded(self._paused_control)
                return
        self._out += data
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None:
        if self.closing:
            return
        out = self._out
        n = len(data)
        if n <= max_frame:
            out += HEADER.pack(n, _DATA, stream_id)
            out += data
        else:
            # Every frame but the last is full: one header serves them all.
            view = memoryview(data)
            whole = n - n % max_frame
            header = HEADER.pack(max_frame, _DATA, stream_id)
            for start in range(0, whole, max_frame):
                out += header
                out += view[start : start + max_frame]
            if whole < n:
                out += HEADER.pack(n - whole, _DATA, stream_id)
                out += view[whole:]
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._out or self._transport is None or self._transport.is_closing():
            self._out.clear()
            return
        data = self._out
        self._out = bytearray()  # the transport may keep what it could not send yet
        self._transport.write(data)

    # --- streams -------------------------------------------------------------------

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
        """SC side: open a stream to ``service``; ``stream.opened`` resolves on OPEN_OK.

        ``client`` and ``destination`` are the client's and the SC's ``host:port``.
        """
        stream_id = self._allocate_stream_id()
        stream = Stream(self, stream_id, service, window, max_frame, sink, self.budget)
        stream.await_grant(defaults.MIN_STREAM_WINDOW)
        stream.opened = self._loop.create_future()
        self.streams[stream_id] = stream
        self.streams_total += 1
        self.send_raw(Open(stream_id, service, window, max_frame, client, destination).encode())
        return stream

    def _allocate_stream_id(self) -> int:
        stream_id = self._next_stream_id
        self._next_stream_id += 1
        return stream_id

    def accept_stream(self, request: Open) -> Stream:
        """SP side: create the stream for an OPEN (bind a sink before data flows)."""
        window = granted_window(self.stream_window, request.window)
        stream = Stream(
            self, request.stream_id, request.uuid, window, request.max_frame, budget=self.budget
        )
        self.streams[request.stream_id] = stream
        self.streams_total += 1
        return stream

    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None:
        if failure is None:
            self.send_raw(encode_open_ok(stream.id, stream.window))
            return
        self.send_raw(
            CodedReason(FrameType.OPEN_FAIL, stream.id, failure.code, failure.reason).encode()
        )
        stream.finished = True
        self.forget_stream(stream)

    def forget_stream(self, stream: Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    def log_stream_error(self, stream: Stream, message: str) -> None:
        log.warning("%s: stream %d: %s", self, stream.id, message)

    # --- receiving -----------------------------------------------------------------

    def _handshake_frames(self, frames: list[RawFrame]) -> list[RawFrame]:
        handshake = self._handshake
        assert handshake is not None
        for index, (ftype, stream_id, payload) in enumerate(frames):
            for out in handshake.receive(Frame(FrameType(ftype), stream_id, bytes(payload))):
                self.send_raw(out)
            if handshake.done:
                self._handshake = None
                self._authenticated(handshake)
                return frames[index + 1 :]
        return []

    def _authenticated(self, handshake: ConsumerHandshake | ProviderHandshake) -> None:
        self.authenticated = True
        if isinstance(handshake, ConsumerHandshake) and handshake.peer_name:
            self.name = handshake.peer_name
        self._decoder.max_payload = MAX_PAYLOAD
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_later(self._heartbeat_interval, self._heartbeat)
        self.owner.pipe_authenticated(self)

    def _dispatch(self, frame: Frame) -> None:
        ftype = frame.type
        if ftype is FrameType.WINDOW:
            increment = decode_window(frame.payload)
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.receive_window(increment)
        elif ftype is FrameType.FIN:
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                self._unknown_stream(frame.stream_id, "FIN")
            else:
                stream.receive_eof()
        elif ftype is FrameType.RESET:
            reset = CodedReason.decode(ftype, frame.stream_id, frame.payload)
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.receive_reset(f"reset by {self.role_peer}: {reset.reason}")
        elif ftype is FrameType.PING:
            self._pings += 1
            if self._pings > MAX_PINGS_PER_INTERVAL:
                raise LimitExceeded(
                    f"{self.role_peer} sent more than {MAX_PINGS_PER_INTERVAL} PINGs within "
                    f"{self._heartbeat_interval:g} s",
                    Limit.PINGS,
                )
            self.send_raw(encode_ping(FrameType.PONG, decode_ping(frame.payload)))
        elif ftype is FrameType.PONG:
            decode_ping(frame.payload)
        elif ftype is FrameType.GOAWAY:
            goaway = CodedReason.decode(ftype, 0, frame.payload)
            if goaway.code == GoawayCode.DRAINING:
                if not self.draining:
                    self.draining = True
                    log.info(
                        "%s: %s is draining (%s): no new streams here, %d open may finish",
                        self,
                        self.role_peer,
                        goaway.reason,
                        len(self.streams),
                    )
            else:
                self._shutdown(f"{self.role_peer} closed the pipe: {goaway.reason}")
        elif self.role is Role.PROVIDER:
            self._dispatch_provider(frame)
        else:
            self._dispatch_consumer(frame)

    def _dispatch_provider(self, frame: Frame) -> None:
        if frame.type is FrameType.OPEN:
            request = Open.decode(frame.stream_id, frame.payload)
            if request.stream_id == 0 or request.stream_id in self.streams:
                raise RemoteProtocolError(f"OPEN reuses stream id {request.stream_id}")
            if request.max_frame > MAX_PAYLOAD:
                raise RemoteProtocolError(f"OPEN asks for frames of {request.max_frame} bytes")
            if len(self.streams) >= self._max_streams:
                self._refuse_stream(request)
                return
            cast(ProviderOwner, self.owner).pipe_open(self, request)
        elif frame.type is FrameType.REGISTERED:
            # A second REGISTERED is an update: the SC's config was reloaded.
            self.registered = True
            cast(ProviderOwner, self.owner).pipe_registered(
                self, Registered.decode(frame.payload).results
            )
        else:
            raise RemoteProtocolError(f"unexpected {frame.type.name} from the SC")

    def _dispatch_consumer(self, frame: Frame) -> None:
        if frame.type is FrameType.OPEN_OK:
            granted = decode_open_ok(frame.payload)
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.receive_open_result(None, granted)
        elif frame.type is FrameType.OPEN_FAIL:
            failure = CodedReason.decode(frame.type, frame.stream_id, frame.payload)
            stream = self.streams.get(frame.stream_id)
            if stream is not None:
                stream.receive_open_result(OpenRefused(failure.code, failure.reason))
        elif frame.type is FrameType.REGISTER:
            if self.registered:
                raise RemoteProtocolError("second REGISTER on one pipe")
            register = Register.decode(frame.payload)
            self.registered = True
            results = cast(ConsumerOwner, self.owner).pipe_register(self, register.uuids)
            self.send_raw(Registered(tuple(results)).encode())
        else:
            raise RemoteProtocolError(f"unexpected {frame.type.name} from the SP")

    def _refuse_stream(self, request: Open) -> None:
        """OPEN beyond ``streams_per_pipe``: refuse that stream (the SC answers its client)."""
        self._streams_refused += 1
        self.limit_hit(Limit.STREAMS_PER_PIPE)
        reason = f"the SP's pipe carries its limit of {self._max_streams} concurrent streams"
        if self._streams_refused == 1:
            log.warning("%s: %s: refusing new streams (only counted from now on)", self, reason)
        stream = self.accept_stream(request)
        self.answer_open(stream, OpenRefused(OpenFailure.CONNECT_ERROR, reason))

    def _unknown_stream(self, stream_id: int, what: str) -> None:
        # A stream closed here may still receive frames the peer sent before it
        # learnt of the close: count them, never let them touch another stream.
        self.unknown_stream_frames += 1
        log.debug("%s: %s for unknown stream %d dropped", self, what, stream_id)

    # --- life cycle -----------------------------------------------------------------

    def _heartbeat(self) -> None:
        idle = time.monotonic() - self._last_rx
        if idle > self._heartbeat_timeout:
            log.warning("%s: no heartbeat for %.1f s, closing", self, idle)
            self.abort(f"heartbeat timeout ({idle:.1f} s without a frame)")
            return
        self._pings = 0
        self.send_raw(encode_ping(FrameType.PING, int(time.monotonic() * 1000)))
        self._timer = self._loop.call_later(self._heartbeat_interval, self._heartbeat)

    def _handshake_expired(self) -> None:
        if not self.authenticated:
            self._fail(GoawayCode.PROTOCOL_ERROR, "handshake not completed in time")

    def _control_backlog_exceeded(self, queued: int) -> None:
        """The peer makes us answer but does not read: stop holding its frames."""
        message = (
            f"{self.role_peer} does not read: {queued} bytes of control frames queued "
            f"(limit {self._control_backlog})"
        )
        log.warning("%s: %s, closing", self, message)
        self.limit_hit(Limit.CONTROL_BACKLOG)
        self.abort(message, LimitExceeded(message, Limit.CONTROL_BACKLOG))

    def refuse(self, refusal: Refusal) -> None:
        """Turn the pipe away before its handshake: one small GOAWAY, then close (no timer)."""
        self.refused = True
        self.closing = True
        self.close_reason = refusal.reason
        if self._transport is not None:
            self._transport.write(
                CodedReason(FrameType.GOAWAY, 0, refusal.code, refusal.reason).encode()
            )
            self._transport.close()

    def _fail(self, code: GoawayCode, reason: str) -> None:
        # Before authentication the owner logs the close with this reason (SC:
        # "closed before authenticating", SP: "pipe closed ...; redial"): once is enough.
        log.log(logging.WARNING if self.authenticated else logging.DEBUG, "%s: %s", self, reason)
        self.close(code, reason)

    def _shutdown(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        if self._transport is not None:
            self._flush()
            self._transport.close()

    def drain(self, reason: str) -> None:
        """Tell the peer no new streams will be taken here; open ones go on."""
        if self.closing or self.draining or self.closed.done():
            return
        self.draining = True
        self.send_raw(CodedReason(FrameType.GOAWAY, 0, GoawayCode.DRAINING, reason).encode())

    def close(self, code: GoawayCode = GoawayCode.NORMAL, reason: str = "closing") -> None:
        """Say GOAWAY with ``reason`` and close once it is written (abort after CLOSE_TIMEOUT)."""
        if self.closing or self._transport is None:
            return
        self.send_raw(CodedReason(FrameType.GOAWAY, 0, code, reason).encode())
        self._flush()
        self.closing = True
        self.close_reason = reason
        self._transport.close()
        self._loop.call_later(defaults.CLOSE_TIMEOUT, self.abort)

    def abort(self, reason: str = "", error: ProtocolError | None = None) -> None:
        """Cut the pipe now (no GOAWAY); ``reason`` and ``error`` say why."""
        self._note_abort(reason, error)
        if self._transport is not None and not self.closed.done():
            self.closing = True
            self._transport.abort()

    def _note_abort(self, reason: str, error: ProtocolError | None) -> None:
        if reason:
            self.close_reason = reason
        if error is not None:
            self.error = error


def open_failure_from_os_error(exc: OSError) -> OpenRefused:
    if isinstance(exc, ConnectionRefusedError):
        return OpenRefused(OpenFailure.CONNECT_REFUSED, f"connection refused: {exc.strerror}")
    if isinstance(exc, TimeoutError):
        return OpenRefused(OpenFailure.CONNECT_TIMEOUT, "connect timed out")
    return OpenRefused(OpenFailure.CONNECT_ERROR, f"cannot connect: {exc.strerror or exc}")
