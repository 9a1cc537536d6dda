"""The pipe protocol engine, sans I/O: frames in, events and frames out, the clock passed in.

``PipeConnection`` is one pipe between SC and SP as a state machine, in the
spirit of h11 and aioquic: it never touches a socket, a timer or the clock.
Its carrier adapter (``carriers.tcp.TcpPipe``, ``carriers.quic.pipe.QuicPipe``)
feeds it what arrives (``receive`` / ``receive_frames``) with ``now``, takes
what it queued from its ``Outbox``, acts on the events it emits
(``Authenticated``, ``OpenRequested``, ``CloseTransport``, ...) and keeps one
timer at ``next_deadline()``, calling ``handle_timer(now)`` when it fires.

Here live the handshake, multiplexing and stream-id allocation, flow-control
dispatch to each ``Stream``, heartbeats, GOAWAY/drain/close, the handshake
timeout, the bound on control frames queued for a peer that does not read,
and the per-pipe limits (``streams_per_pipe``, PINGs per interval).

Its life cycle is one ``State``: HANDSHAKE -> OPEN -> DRAINING -> CLOSING -> CLOSED
(DRAINING and CLOSING may be skipped; CLOSED is final).

It is one of the two modules over 400 lines, and ``PipeConnection`` one of the
two classes over 300: it is the one state machine of a pipe, whose transitions
(receiving, timers, closing) read best side by side. The parts with a job of
their own are apart: ``events`` (states and events), ``streams`` (the stream
table), ``roles`` (SC- and SP-only frames), ``bounds`` (the per-pipe limits),
``budget`` (bytes held), ``outbox`` (frames out), ``settings`` and ``status``.
"""

from __future__ import annotations

import itertools
import logging
import uuid as uuid_mod
from collections.abc import Callable, Sequence

from edgerq import defaults
from edgerq.errors import AuthError, LimitExceeded, ProtocolError, RemoteProtocolError, VersionError
from edgerq.labels import Limit
from edgerq.pipe.bounds import PipeBounds
from edgerq.pipe.budget import PipeBudget, granted_window
from edgerq.pipe.events import (
    AbortTransport,
    Authenticated,
    CloseTransport,
    PipeEvent,
    Refusal,
    Role,
    State,
)
from edgerq.pipe.outbox import Outbox, Payload
from edgerq.pipe.roles import ConsumerFrames, ProviderFrames, RoleFrames
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.status import PipeStatus
from edgerq.pipe.stream import OpenRefused, Stream, StreamSink
from edgerq.pipe.streams import StreamTable
from edgerq.protocol.frames import (
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
    Registered,
    RegisterStatus,
    decode_ping,
    decode_window,
    encode_open_ok,
    encode_ping,
)

log = logging.getLogger("edgerq.pipe")

_pipe_ids = itertools.count(1)
_DATA = int(FrameType.DATA)
_CLOSING = State.CLOSING
_CLOSED = State.CLOSED
"""The hot path compares with these: ``State.CLOSING`` is a lookup through the enum's
metaclass, on every frame."""


def _ignore(_: object = None) -> None:
    pass


class PipeConnection:
    """One pipe's protocol state: handshake, streams, heartbeats, limits, close."""

    def __init__(
        self,
        settings: PipeSettings,
        outbox: Outbox,
        *,
        now: float,
        emit: Callable[[PipeEvent], None] = _ignore,
        wake: Callable[[], object] = _ignore,
        wake_once: bool = False,
        on_limit: Callable[[Limit], None] = _ignore,
        stream_id_step: int = 1,
    ) -> None:
        """``emit`` receives every event at once, in order; ``wake`` is told frames
        were queued in ``outbox`` (the adapter writes them out soon, once). With
        ``wake_once`` (the adapter takes all that was queued in one go) it is told
        once, until the adapter clears ``woken``; else for every frame."""
        self.id = 0
        """Numbered once its connection is up (``connected``); 0 until then."""
        self.settings = settings
        role = self.role = settings.role
        self.name = settings.name
        self.peer = "?"
        self.state = State.HANDSHAKE
        self.outbox = outbox
        self._emit = emit
        self._wake = wake
        self._wake_once = wake_once
        self.woken = False
        """``wake_once``: the adapter was woken and has not taken the outbox yet (it
        clears this when it does); ``wake`` is not called again until then."""
        self._handshake: ConsumerHandshake | ProviderHandshake | None = settings.handshake()
        self._decoder = FrameDecoder(stream_data=True)  # one byte stream: DATA as it arrives
        self.table = StreamTable(self, stream_id_step)
        self.streams = self.table.streams
        """Stream id -> ``Stream`` (the table's own dict)."""
        self.paused = False
        """The carrier cannot take more now (the peer is slow to read)."""
        self.close_reason = ""
        self.error: ProtocolError | None = None
        self.refusal: Refusal | None = None
        self.last_heard = now
        """``now`` when a frame last arrived (heartbeats included)."""
        self.opened_at = now
        self._heartbeat_interval = settings.heartbeat_interval
        self._heartbeat_timeout = settings.heartbeat_timeout
        self._handshake_timeout = settings.handshake_timeout
        self.deadline: float | None = None
        """When ``handle_timer`` has work: the handshake timeout, the next heartbeat,
        or the abort of a close that did not finish (``next_deadline()``; the carrier
        may read it after each input, never sets it)."""
        self.bounds = PipeBounds(settings.max_streams, settings.control_backlog, on_limit)
        self.stream_window = settings.stream_window
        """The most this end grants a stream the peer opens, whatever it asks (SP side)."""
        self.budget = PipeBudget(self, settings.pipe_buffer)
        """Bytes the streams hold for their local sockets, at most ``pipe_buffer``; its
        ``LimitExceeded`` reaches ``receive`` and closes the pipe like any other."""
        self._role_frames: RoleFrames = (
            ProviderFrames(self, self.table, self.bounds, emit)
            if role is Role.PROVIDER
            else ConsumerFrames(self.table, emit)
        )

    def __str__(self) -> str:
        who = f" '{self.name}'" if self.name else ""
        return f"pipe {self.id or '?'}{who} ({self.peer})"

    def connected(self) -> None:
        """The carrier's connection is up: the pipe takes this process's next number.
        Dials that never connect take none, so an SP that retried before its SC was
        up still calls its first pipe ``pipe 1``, as the SC does."""
        if not self.id:
            self.id = next(_pipe_ids)

    @property
    def limit_hit(self) -> Callable[[Limit], None]:
        """Told every limit this pipe enforces (the daemon counts them)."""
        return self.bounds.on_limit

    def learn_peer(self, address: str) -> None:
        """The carrier knows the peer's ``host:port`` (named in every log line)."""
        self.peer = address

    @property
    def streams_total(self) -> int:
        return self.table.total

    @property
    def registered(self) -> bool:
        return self._role_frames.registered

    @property
    def authenticated(self) -> bool:
        """The handshake succeeded (stays true once the pipe closes)."""
        return self._handshake is None

    @property
    def role_peer(self) -> str:
        return "SP" if self.role is Role.CONSUMER else "SC"

    # --- timers ----------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When ``handle_timer`` must next be called (None: no timer needed)."""
        return self.deadline

    def handle_timer(self, now: float) -> None:
        deadline = self.deadline
        if deadline is None or now < deadline:
            return
        self.deadline = None
        if self.state is State.CLOSING:
            self._emit(AbortTransport())  # the close did not finish in time
        elif self.state is State.CLOSED:
            pass
        elif self._handshake is not None:
            self._fail(GoawayCode.PROTOCOL_ERROR, "handshake not completed in time", now)
        else:
            self._heartbeat(now)

    def _heartbeat(self, now: float) -> None:
        idle = now - self.last_heard
        if idle > self._heartbeat_timeout:
            log.warning("%s: no heartbeat for %.1f s, closing", self, idle)
            self.abort(f"heartbeat timeout ({idle:.1f} s without a frame)")
            return
        self.bounds.new_interval()
        self.send_raw(encode_ping(FrameType.PING, int(now * 1000)))
        self.deadline = now + self._heartbeat_interval

    # --- receiving -------------------------------------------------------------------

    def start(self, now: float) -> None:
        """The connection is up: the SP says HELLO, the handshake timeout starts."""
        self.connected()
        if isinstance(self._handshake, ProviderHandshake):
            self.send_raw(self._handshake.start())
        self.deadline = now + self._handshake_timeout

    def refuse(self, refusal: Refusal) -> bytes:
        """Turn the pipe away before its handshake; returns the GOAWAY to send, if any."""
        self.refusal = refusal
        self.state = State.CLOSING
        self.close_reason = refusal.reason
        self.deadline = None
        return CodedReason(FrameType.GOAWAY, 0, refusal.code, refusal.reason).encode()

    def heard(self, now: float) -> None:
        """Something arrived from the peer (a carrier may know before any frame is whole)."""
        self.last_heard = now

    def receive(self, data: bytes, now: float) -> None:
        """Bytes from a byte-stream carrier."""
        self.last_heard = now
        try:
            if self._handshake is None and self.state is not _CLOSED:  # the hot path
                self._deliver(self._decoder.receive(data), now)
            elif not self._ignores_input():
                self._receive_frames(self._decoder.receive(data), now, control=True)
        except ProtocolError as exc:
            self.protocol_failure(exc, now)

    def receive_frames(self, frames: list[RawFrame], now: float, *, control: bool) -> None:
        """Frames a carrier decoded itself; ``control``: they came where the handshake runs."""
        try:
            if self._handshake is None and self.state is not _CLOSED:  # the hot path
                self._deliver(frames, now)
            elif not self._ignores_input():
                self._receive_frames(frames, now, control=control)
        except ProtocolError as exc:
            self.protocol_failure(exc, now)

    def _ignores_input(self) -> bool:
        """Closed, or closing before it authenticated (refused, failed): nothing to do."""
        state = self.state
        return state is State.CLOSED or (state is State.CLOSING and self._handshake is not None)

    def _receive_frames(self, frames: list[RawFrame], now: float, *, control: bool) -> None:
        if self._handshake is not None:
            if not control:
                raise RemoteProtocolError("stream opened before the pipe was authenticated")
            frames = self._handshake_frames(frames, now)
        self._deliver(frames, now)

    def status(self) -> PipeStatus:
        """This pipe now, for ``/status`` and the close log line."""
        return PipeStatus(
            id=self.id,
            name=self.name,
            peer=self.peer,
            state=self.state,
            opened_at=self.opened_at,
            last_heard=self.last_heard,
            streams_open=len(self.streams),
            streams_total=self.table.total,
            unknown_stream_frames=self.table.unknown_frames,
            max_streams=self.bounds.max_streams,
            control_backlog=self.bounds.control_backlog,
            pipe_buffer=self.budget.limit,
            held=self.budget.held,
            limit_violations=self.budget.violations,
        )

    def set_limits(self, *, max_streams: int, control_backlog: int, pipe_buffer: int) -> None:
        """New bounds from a reload: streams already open go on; new OPENs, queued
        control frames and DATA are checked against these from now on (bytes held
        already stay held)."""
        self.bounds.max_streams = max_streams
        self.bounds.control_backlog = control_backlog
        self.budget.limit = pipe_buffer

    # --- for carriers that frame each stream apart (QUIC) -----------------------------------

    def hold(self, n: int) -> bool:
        """The carrier holds ``n`` more bytes for this pipe outside its streams
        (incomplete frames): charged to ``pipe_buffer``; False (nothing charged) past it."""
        return self.budget.charge(n)

    def release(self, n: int) -> None:
        """The carrier no longer holds ``n`` of the bytes it charged with ``hold``."""
        self.budget.release(n)

    def dropped_frame(self, stream_id: int, what: str) -> None:
        """The carrier dropped ``what`` for a stream this pipe no longer has (counted)."""
        self.table.unknown(stream_id, what)

    def protocol_failure(self, exc: ProtocolError, now: float) -> None:
        """Close the pipe for ``exc`` with the GOAWAY code that names it (also for a
        carrier that found the peer's bytes broken before they reached ``receive``)."""
        self.error = exc
        if isinstance(exc, VersionError):
            self._fail(GoawayCode.VERSION_MISMATCH, str(exc), now)
        elif isinstance(exc, AuthError):
            self._fail(GoawayCode.AUTH_FAILED, str(exc), now)
        elif isinstance(exc, LimitExceeded):
            self.bounds.on_limit(exc.limit)
            self._fail(GoawayCode.LIMIT_EXCEEDED, str(exc), now)
        else:
            prefix = "" if self.authenticated else "not an edgerq pipe, or a broken one: "
            self._fail(GoawayCode.PROTOCOL_ERROR, f"{prefix}{exc}", now)

    def _handshake_frames(self, frames: list[RawFrame], now: float) -> list[RawFrame]:
        handshake = self._handshake
        assert handshake is not None
        for index, (ftype, stream_id, payload) in enumerate(frames):
            for out in handshake.receive(Frame(FrameType(ftype), stream_id, bytes(payload))):
                self.send_raw(out)
            if handshake.done:
                self._authenticated(handshake, now)
                return frames[index + 1 :]
        return []

    def _authenticated(self, handshake: ConsumerHandshake | ProviderHandshake, now: float) -> None:
        self._handshake = None
        if isinstance(handshake, ConsumerHandshake) and handshake.peer_name:
            self.name = handshake.peer_name
        self._decoder.max_payload = MAX_PAYLOAD
        if self.state is State.HANDSHAKE:
            self.state = State.OPEN
        if self.state < State.CLOSING:
            self.deadline = now + self._heartbeat_interval
        self._emit(Authenticated())

    def _deliver(self, frames: list[RawFrame], now: float) -> None:
        """Dispatch frames; consecutive DATA frames of one stream reach it as one write.

        The hot path of a pipe: a run of DATA frames is held as its first payload
        (``first``) and, only once a second one of the same stream follows, a list."""
        streams = self.streams
        run_id = 0
        first: bytes | memoryview | None = None
        more: list[bytes | memoryview] = []
        for ftype, stream_id, payload in frames:
            if ftype == _DATA:
                if first is not None:
                    if stream_id == run_id:
                        more.append(payload)
                        continue
                    self._data_run(streams.get(run_id), run_id, first, more)
                    more = []
                run_id = stream_id
                first = payload
                continue
            if first is not None:
                self._data_run(streams.get(run_id), run_id, first, more)
                first = None
                more = []
            self._dispatch(Frame(FrameType(ftype), stream_id, bytes(payload)), now)
        if first is not None:
            self._data_run(streams.get(run_id), run_id, first, more)

    def _data_run(
        self,
        stream: Stream | None,
        stream_id: int,
        first: bytes | memoryview,
        more: list[bytes | memoryview],
    ) -> None:
        if stream is None:
            self.table.unknown(stream_id, "DATA")
        elif more:
            stream.receive_data(b"".join([first, *more]))
        else:
            stream.receive_data(first)

    def _dispatch(self, frame: Frame, now: float) -> None:
        ftype = frame.type
        if ftype is FrameType.WINDOW:
            self.table.window(frame.stream_id, decode_window(frame.payload))
        elif ftype is FrameType.FIN:
            self.table.eof(frame.stream_id)
        elif ftype is FrameType.RESET:
            reset = CodedReason.decode(ftype, frame.stream_id, frame.payload)
            self.table.reset(frame.stream_id, f"reset by {self.role_peer}: {reset.reason}")
        elif ftype is FrameType.PING:
            self.bounds.ping(self.role_peer, self._heartbeat_interval)
            self.send_raw(encode_ping(FrameType.PONG, decode_ping(frame.payload)))
        elif ftype is FrameType.PONG:
            decode_ping(frame.payload)
        elif ftype is FrameType.GOAWAY:
            goaway = CodedReason.decode(ftype, 0, frame.payload)
            if goaway.code != GoawayCode.DRAINING:
                self.shutdown(f"{self.role_peer} closed the pipe: {goaway.reason}", now)
            elif self.state < State.DRAINING:
                self.state = State.DRAINING
                log.info(
                    "%s: %s is draining (%s): no new streams here, %d open may finish",
                    self,
                    self.role_peer,
                    goaway.reason,
                    len(self.streams),
                )
        else:
            self._role_frames.handle(frame)

    # --- sending (the streams' ``StreamWriter``) -------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Queue one encoded frame (nothing once closing)."""
        if self.state >= _CLOSING:
            return
        if self.paused:
            queued = self.bounds.queue_paused(len(data))
            if queued is not None:
                self.control_backlog_exceeded(queued)
                return
        self.outbox.frame(data)
        if not self.woken:
            self.woken = self._wake_once
            self._wake()

    def send_data(self, stream_id: int, data: Payload, max_frame: int) -> None:
        if self.state >= _CLOSING:
            return
        self.outbox.data(stream_id, data, max_frame)
        if not self.woken:
            self.woken = self._wake_once
            self._wake()

    def forget_stream(self, stream: Stream) -> None:
        self.table.forget(stream)
        if self.outbox.end_stream(stream.id):
            self._wake()

    def log_stream_error(self, stream: Stream, message: str) -> None:
        log.warning("%s: stream %d: %s", self, stream.id, message)

    def send_registered(self, results: Sequence[tuple[uuid_mod.UUID, RegisterStatus]]) -> None:
        self.send_raw(Registered(tuple(results)).encode())

    # --- streams ---------------------------------------------------------------------

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
        """SC side: open a stream to ``service`` (OPEN_OK or OPEN_FAIL answers it)."""
        stream = self.table.outgoing(self, service, window, max_frame, sink, self.budget)
        stream.await_grant(defaults.MIN_STREAM_WINDOW)  # until OPEN_OK names the SP's grant
        stream.await_answer()
        self.send_raw(Open(stream.id, service, window, max_frame, client, destination).encode())
        return stream

    def accept_stream(self, request: Open) -> Stream:
        """SP side: create the stream for an OPEN (bind a sink before data flows)."""
        window = granted_window(self.stream_window, request.window)
        return self.table.incoming(self, request, window, self.budget)

    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None:
        if failure is None:
            self.send_raw(encode_open_ok(stream.id, stream.window))  # the window granted
            return
        self.send_raw(
            CodedReason(FrameType.OPEN_FAIL, stream.id, failure.code, failure.reason).encode()
        )
        stream.finished = True
        self.forget_stream(stream)

    # --- the carrier's state ---------------------------------------------------------

    def pause_writing(self) -> None:
        self.paused = True
        self.table.pipe_paused(True)

    def resume_writing(self) -> None:
        self.paused = False
        self.bounds.resumed()
        self.table.pipe_paused(False)

    def control_backlog_exceeded(self, queued: int) -> None:
        """The peer makes us answer but does not read: stop holding its frames."""
        if self.state is State.CLOSED:
            return
        error = self.bounds.backlog_exceeded(self.role_peer, queued)
        if error is not None:
            log.warning("%s: %s, closing", self, error)
            self.abort(str(error), error)

    def connection_lost(self, reason: str) -> str:
        """The connection is gone: reset every stream; returns why the pipe closed."""
        self.state = State.CLOSED
        self.deadline = None
        if not self.close_reason:
            self.close_reason = reason
        self.table.reset_all(f"pipe closed: {self.close_reason}")
        self.outbox.clear()
        return self.close_reason

    # --- closing ---------------------------------------------------------------------

    def drain(self, reason: str) -> None:
        """Tell the peer no new streams will be taken here; open ones go on."""
        if self.state >= State.DRAINING:
            return
        self.send_raw(CodedReason(FrameType.GOAWAY, 0, GoawayCode.DRAINING, reason).encode())
        self.state = State.DRAINING

    def close(self, code: GoawayCode, reason: str, now: float) -> None:
        """Say GOAWAY with ``reason``, then close (abort after ``CLOSE_TIMEOUT``)."""
        if self.state >= State.CLOSING:
            return
        self.send_raw(CodedReason(FrameType.GOAWAY, 0, code, reason).encode())
        if self.state >= State.CLOSING:
            return  # sending it overran the control backlog: aborted
        self._closing(reason, now)

    def shutdown(self, reason: str, now: float) -> None:
        """The peer is done (GOAWAY, end of stream): close without a GOAWAY of ours."""
        if self.state >= State.CLOSING:
            if not self.close_reason:
                self.close_reason = reason
            return
        self._closing(self.close_reason or reason, now)

    def _closing(self, reason: str, now: float) -> None:
        self.state = State.CLOSING
        self.close_reason = reason
        self.deadline = now + defaults.CLOSE_TIMEOUT
        self._emit(CloseTransport())

    def abort(self, reason: str = "", error: ProtocolError | None = None) -> None:
        """Cut the pipe now (no GOAWAY); ``reason`` and ``error`` say why."""
        if reason:
            self.close_reason = reason
        if error is not None:
            self.error = error
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSING
        self.deadline = None
        self._emit(AbortTransport())

    def _fail(self, code: GoawayCode, reason: str, now: float) -> None:
        # Before authentication the owner logs the close with this reason (SC:
        # "closed before authenticating", SP: "pipe closed ...; redial"): once is enough.
        log.log(logging.WARNING if self.authenticated else logging.DEBUG, "%s: %s", self, reason)
        self.close(code, reason, now)
