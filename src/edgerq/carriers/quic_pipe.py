"""A pipe whose frames travel on QUIC streams (the ``udp`` carrier).

Mapping onto QUIC:

- QUIC stream 0 (opened by the SP) carries the pipe's control frames: the
  handshake, registration, heartbeats and GOAWAY, exactly as on ``tcp``.
- Every tunneled connection is one bidirectional QUIC stream opened by the SC
  (server-initiated ids 1, 5, 9, …); it carries that stream's own frames
  (OPEN first — a QUIC stream is invisible to the peer until its first byte —
  then DATA, WINDOW, FIN, RESET), so a lost datagram only delays the stream it
  belongs to. The stream id in every frame header must equal the QUIC stream id.
- When a stream ends (FIN both ways, RESET sent or received, or the SP refused
  it), each side ends its half of the QUIC stream, so no stream slot is ever
  left in use; a QUIC-level reset from the peer is answered the same way.

Reliability, congestion control, encryption and path migration are QUIC's.
The per-stream windows of ``MuxPipe`` still bound what a slow reader can make
either side buffer; towards the peer, the local sockets stop being read while
qh3 holds more than ``SEND_HIGH_WATER`` untransmitted (a peer may grant stream
credit and withhold QUIC's), as a tcp pipe's do while its socket is full.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from qh3.quic.connection import QuicConnection

from edgerq import defaults
from edgerq.errors import LimitExceeded, ProtocolError, RemoteProtocolError
from edgerq.labels import Limit
from edgerq.pipe import MuxPipe, Refusal, Role
from edgerq.protocol.frames import (
    HANDSHAKE_MAX_PAYLOAD,
    MAX_PAYLOAD,
    FrameDecoder,
    FrameType,
    encode_data_header,
)
from edgerq.protocol.messages import CodedReason, GoawayCode
from edgerq.stream import Stream

log = logging.getLogger("edgerq.quic")

CONTROL_STREAM = 0

SEND_HIGH_WATER = 1024 * 1024
SEND_LOW_WATER = 256 * 1024
"""Bytes qh3 holds not yet transmitted (all streams) at which the pipe's local sockets
stop being read, and below which they are read again: what tcp's transport
high-water mark does, since a peer may grant stream credit and withhold QUIC's."""

FORGOTTEN_AFTER = 1.5
"""Seconds of silence after which an SC's notice of an unknown connection closes the pipe."""


class QuicLink(Protocol):
    """What a ``QuicPipe`` uses of its QUIC connection's asyncio glue (``PipeProtocol``)."""

    _quic: QuicConnection
    is_client: bool

    def transmit(self) -> None: ...
    def close_transport_later(self) -> None: ...


class QuicPipe(MuxPipe):
    """A ``MuxPipe`` whose frames travel on QUIC streams instead of one byte stream."""

    carrier = "udp"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocol: QuicLink | None = None
        self._queues: dict[int, list[bytes]] = {}
        self._decoders: dict[int, FrameDecoder] = {}
        self._to_end: set[int] = set()
        self._ended: set[int] = set()
        self._next_quic_stream = 1  # server-initiated bidirectional: 1, 5, 9, …
        self._batching = False
        self._rx_pending: dict[int, list[bytes]] = {}
        self._unsent = 0
        """qh3's untransmitted bytes at the last look, plus what was queued since."""
        """Stream data of one batch of datagrams, delivered as one write per stream."""

    # --- wiring to the QUIC connection ----------------------------------------------

    def attach(self, protocol: QuicLink) -> None:
        self._protocol = protocol

    def quic_ready(self, source: Any = None) -> None:
        """The QUIC handshake is done (SP) or the connection exists (SC): start ours.
        ``source``: the address of the first datagram (SC), when known."""
        if source is not None:
            self.peer = f"{str(source[0]).removeprefix('::ffff:')}:{source[1]}"
        self._learn_peer()
        self._start_handshake()

    def _learn_peer(self) -> None:
        if self._protocol is not None:
            address = getattr(self._protocol._quic, "_remote_addr", None)
            if address is not None:
                host = str(address[0]).removeprefix("::ffff:")
                self.peer = f"{host}:{address[1]}"

    def refuse(self, refusal: Refusal) -> None:
        """Turned away before the QUIC handshake: nothing is sent, the datagram is dropped."""
        self.refused = True
        self.closing = True
        self.close_reason = refusal.reason
        self.connection_lost(None)

    def begin_batch(self) -> None:
        self._batching = True

    def end_batch(self) -> None:
        self._batching = False
        self.deliver_pending()
        if self.paused:  # acknowledgements may have freed room: look once they are sent
            self._loop.call_soon(self._check_send_backlog)

    def deliver_pending(self) -> None:
        """Hand over the data stream events held back in this batch (in order, per stream)."""
        if not self._rx_pending:
            return
        pending = self._rx_pending
        self._rx_pending = {}
        for quic_stream, chunks in pending.items():
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self._stream_data(quic_stream, data, False)

    def quic_stream_data(self, quic_stream: int, data: bytes, end_stream: bool) -> None:
        # Within a batch of datagrams the data of a tunneled stream is gathered
        # and delivered once (one write to its socket instead of one per
        # datagram); anything else first delivers what was gathered, so the
        # order of events as seen by each stream and by the pipe is unchanged.
        if self._batching and not end_stream and quic_stream != CONTROL_STREAM:
            chunks = self._rx_pending.get(quic_stream)
            if chunks is None:
                self._rx_pending[quic_stream] = [data]
            else:
                chunks.append(data)
            return
        self.deliver_pending()
        self._stream_data(quic_stream, data, end_stream)

    def _stream_data(self, quic_stream: int, data: bytes, end_stream: bool) -> None:
        self._last_rx = time.monotonic()
        if self.peer == "?":
            self._learn_peer()
        decoder = self._decoders.get(quic_stream)
        if decoder is None:
            if quic_stream in self._ended and not self.streams.get(quic_stream):
                # Late data for a stream we already closed: ignore, count.
                self.unknown_stream_frames += 1
                return
            if self.role is Role.CONSUMER and quic_stream % 4 == 0 and quic_stream > 0:
                # Only the SC opens data streams: each one the SP opens would cost a decoder
                # holding up to a whole frame, thousands of them at once.
                self.protocol_failure(
                    RemoteProtocolError(
                        f"the SP opened QUIC stream {quic_stream}; only the SC opens streams"
                    )
                )
                return
            limit = MAX_PAYLOAD if self.authenticated else HANDSHAKE_MAX_PAYLOAD
            decoder = self._decoders[quic_stream] = FrameDecoder(limit)
        self._guarded(self._receive_on, quic_stream, decoder, data)
        if end_stream:
            self._drop_decoder(quic_stream)
            if quic_stream == CONTROL_STREAM:
                self._shutdown(f"{self.role_peer} closed the control stream")
                return
            stream = self.streams.get(quic_stream)
            if stream is not None and not stream.eof_received:
                stream.receive_reset("QUIC stream ended without FIN")

    def quic_stream_reset(self, quic_stream: int) -> None:
        self.deliver_pending()
        self._drop_decoder(quic_stream)
        stream = self.streams.get(quic_stream)
        if stream is not None:
            stream.receive_reset(f"stream reset by {self.role_peer}")
        elif quic_stream not in self._ended:
            self._end_quic_stream(quic_stream)

    def peer_forgot(self) -> None:
        """SP: the SC answered that it has no such connection. Believed once the
        pipe is also quiet (the SC restarted); a notice that raced a connection
        id's retirement changes nothing while the SC is still heard from."""
        if self.closing:
            return
        silent = time.monotonic() - self._last_rx
        if silent < FORGOTTEN_AFTER:
            log.debug("%s: SC notice of an unknown connection while heard from; ignored", self)
            return
        reason = (
            f"the SC does not know this connection (restarted?); nothing heard for {silent:.1f} s"
        )
        log.warning("%s: %s, closing", self, reason)
        self.abort(reason)

    def quic_terminated(self, reason: str) -> None:
        self.deliver_pending()
        if not self.close_reason:
            self.close_reason = reason
        self.connection_lost(None)

    # --- receiving ----------------------------------------------------------------

    def _receive_on(self, quic_stream: int, decoder: FrameDecoder, data: bytes) -> None:
        held = decoder.buffered
        frames = decoder.receive(data)
        # An incomplete frame waits in its QUIC stream's decoder: charged to the pipe's
        # budget too, or a peer could leave one on each of thousands of streams.
        held = decoder.buffered - held
        if held < 0:
            self.budget.release(-held)
        elif held and not self.budget.charge(held):
            self._decoders.pop(quic_stream, None)
            self.budget.release(decoder.buffered - held)  # what it held before
            if self.closing:
                return  # ended already, by an earlier stream of this batch
            raise LimitExceeded(
                f"incomplete frames on {len(self._decoders)} QUIC streams would make the pipe "
                f"hold over its pipe_buffer of {self.budget.limit} B",
                Limit.PIPE_BUFFER,
            )
        for _, stream_id, _ in frames:
            if stream_id != quic_stream:
                raise RemoteProtocolError(
                    f"frame for stream {stream_id} arrived on QUIC stream {quic_stream}"
                )
        if quic_stream == CONTROL_STREAM:
            if self._handshake is not None:
                frames = self._handshake_frames(frames)
                if self.authenticated:
                    decoder.max_payload = MAX_PAYLOAD
        elif not self.authenticated:
            raise RemoteProtocolError("stream opened before the pipe was authenticated")
        self._deliver(frames)

    def _drop_decoder(self, quic_stream: int) -> None:
        decoder = self._decoders.pop(quic_stream, None)
        if decoder is not None:
            self.budget.release(decoder.buffered)

    def _guarded(self, handler: Callable[..., None], *args: Any) -> None:
        try:
            handler(*args)
        except ProtocolError as exc:
            self.protocol_failure(exc)

    # --- sending ------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        if self.closing:
            return
        self._queue(int.from_bytes(data[5:9], "big"), data)

    def send_data(
        self, stream_id: int, data: bytes | bytearray | memoryview, max_frame: int
    ) -> None:
        if self.closing:
            return
        header = encode_data_header
        n = len(data)
        self._unsent += n
        if self._unsent > SEND_HIGH_WATER and not self.paused:
            self.pause_writing()  # at once: one loop iteration may read many sockets
        if n <= max_frame:
            self._queue(stream_id, header(stream_id, n) + bytes(data))
            return
        view = memoryview(data)
        for start in range(0, n, max_frame):
            chunk = view[start : start + max_frame]
            self._queue(stream_id, header(stream_id, len(chunk)) + bytes(chunk))

    def _queue(self, quic_stream: int, data: bytes) -> None:
        if quic_stream in self._ended:
            return
        queue = self._queues.get(quic_stream)
        if queue is None:
            self._queues[quic_stream] = [data]
        else:
            queue.append(data)
        self._schedule_flush()

    def _end_quic_stream(self, quic_stream: int) -> None:
        if quic_stream not in self._ended:
            self._to_end.add(quic_stream)
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self._protocol
        if protocol is None or self.closed.done():
            self._queues.clear()
            self._to_end.clear()
            return
        quic = protocol._quic
        control = CONTROL_STREAM in self._queues
        for quic_stream, chunks in self._queues.items():
            end = quic_stream in self._to_end
            self._send(quic, quic_stream, b"".join(chunks), end)
        for quic_stream in self._to_end:
            if quic_stream not in self._ended:
                self._send(quic, quic_stream, b"", True)
        self._queues.clear()
        self._to_end.clear()
        protocol.transmit()
        if control:
            self._check_control_backlog(quic)
        self._check_send_backlog()

    def _check_send_backlog(self) -> None:
        """Pause the local sockets while qh3 holds more than SEND_HIGH_WATER unsent."""
        protocol = self._protocol
        if protocol is None or self.closed.done():
            return
        try:
            backlog = protocol._quic.get_send_buffer_size()
        except Exception:  # closed meanwhile
            return
        self._unsent = backlog
        if not self.paused and backlog > SEND_HIGH_WATER:
            self.pause_writing()
        elif self.paused and backlog <= SEND_LOW_WATER:
            self.resume_writing()

    def _check_control_backlog(self, quic: QuicConnection) -> None:
        """Control frames the peer lets pile up (it grants no flow-control credit)."""
        try:
            queued = quic.get_send_buffer_size(CONTROL_STREAM)
        except Exception:  # closed meanwhile
            return
        if queued > self._control_backlog:
            self._control_backlog_exceeded(queued)

    def _send(self, quic: QuicConnection, quic_stream: int, data: bytes, end: bool) -> None:
        if end:
            self._ended.add(quic_stream)
        try:
            quic.send_stream_data(quic_stream, data, end_stream=end)
        except Exception as exc:  # qh3 raises QuicConnectionError, ValueError, …
            # The peer reset or finished the stream already: nothing left to say on it.
            log.debug("%s: QUIC stream %d: %s", self, quic_stream, exc)

    # --- streams ------------------------------------------------------------------

    def _allocate_stream_id(self) -> int:
        stream_id = self._next_quic_stream
        self._next_quic_stream += 4
        return stream_id

    def forget_stream(self, stream: Stream) -> None:
        super().forget_stream(stream)
        self._end_quic_stream(stream.id)

    # --- life cycle ---------------------------------------------------------------

    def _shutdown(self, reason: str) -> None:
        if not self.close_reason:
            self.close_reason = reason
        self._close_quic(reason)

    def close(self, code: GoawayCode = GoawayCode.NORMAL, reason: str = "closing") -> None:
        if self.closing or self._protocol is None:
            return
        self.send_raw(CodedReason(FrameType.GOAWAY, 0, code, reason).encode())
        self._flush()
        self.closing = True
        self.close_reason = reason
        self._close_quic(reason)
        self._loop.call_later(defaults.CLOSE_TIMEOUT, self.abort)

    def abort(self, reason: str = "", error: ProtocolError | None = None) -> None:
        if self.closed.done():
            return
        self._note_abort(reason, error)
        self.closing = True
        self._close_quic(self.close_reason or "aborted")
        self.connection_lost(None)

    def _close_quic(self, reason: str) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            protocol._quic.close(error_code=0, reason_phrase=reason[:200])
            protocol.transmit()
        except Exception as exc:  # already closed by the peer or by a timeout
            log.debug("%s: closing QUIC: %s", self, exc)
        if protocol.is_client:
            protocol.close_transport_later()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed.done():
            return
        super().connection_lost(exc)
        self._decoders.clear()
        self._queues.clear()
        self._to_end.clear()
        self._rx_pending.clear()
