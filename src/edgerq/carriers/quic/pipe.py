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
The per-stream windows of the pipe core still bound what a slow reader can
make either side buffer; towards the peer, the local sockets stop being read
while qh3 holds more than ``SEND_HIGH_WATER`` untransmitted (a peer may grant
stream credit and withhold QUIC's), as a tcp pipe's do while its socket is
full. Incomplete frames waiting in the per-stream decoders are charged to the
pipe's ``pipe_buffer`` too, or a peer could leave one on each of thousands of
streams.

``QuicPipe`` is a thin adapter: one frame decoder per QUIC stream, the
frames handed to the sans-I/O ``PipeConnection`` with ``now``, and what it
queues (a ``StreamOutbox``) sent on the QUIC streams it names.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Protocol

from qh3.quic.connection import QuicConnection

from edgerq.carriers.adapter import CarrierPipe
from edgerq.carriers.quic import qh3_compat
from edgerq.errors import LimitExceeded, ProtocolError, RemoteProtocolError
from edgerq.labels import Limit
from edgerq.pipe.interface import ConsumerOwner, ProviderOwner, Refusal, Role
from edgerq.pipe.outbox import StreamOutbox
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import HANDSHAKE_MAX_PAYLOAD, MAX_PAYLOAD, FrameDecoder, RawFrame

log = logging.getLogger("edgerq.quic")

CONTROL_STREAM = 0

SEND_HIGH_WATER = 1024 * 1024
SEND_LOW_WATER = 256 * 1024
"""Bytes qh3 holds not yet transmitted (all streams) at which the pipe's local sockets
stop being read, and below which they are read again: what tcp's transport
high-water mark does, since a peer may grant stream credit and withhold QUIC's."""

SMALL_SEND = 4096
"""A stream's last buffer up to this size is handed to qh3 as ``bytes`` (a copy of a
few hundred bytes, most often): qh3's ``send_stream_data`` takes bytes as they are,
a bytearray costs it a memoryview, a cast and a release per call."""

FORGOTTEN_AFTER = 1.5
"""Seconds of silence after which an SC's notice of an unknown connection closes the pipe."""


class QuicLink(Protocol):
    """What a ``QuicPipe`` uses of its QUIC connection's asyncio glue (``PipeProtocol``)."""

    @property
    def quic(self) -> QuicConnection: ...  # qh3's connection (see qh3_compat.CompatProtocol)

    is_client: bool

    def transmit(self) -> None: ...
    def close_transport_later(self) -> None: ...


class QuicPipe(CarrierPipe):
    """A pipe whose frames travel on QUIC streams instead of one byte stream."""

    carrier = "udp"
    stream_id_step = 4  # server-initiated bidirectional QUIC streams: 1, 5, 9, …

    def __init__(self, settings: PipeSettings, owner: ConsumerOwner | ProviderOwner) -> None:
        self._out = StreamOutbox()
        self._protocol: QuicLink | None = None
        self._quic: QuicConnection | None = None
        """The protocol's QUIC connection (one for its life), kept: it is used per flush."""
        self._decoders: dict[int, FrameDecoder] = {}
        self._batching = False
        self._rx_pending: dict[int, list[bytes]] = {}
        """Stream data of one batch of datagrams, delivered as one write per stream."""
        self._unsent = 0
        """qh3's untransmitted bytes at the last look (what is queued since comes on top)."""
        self._handed = 0
        """Bytes handed to qh3 since that look: qh3 holds at most ``_unsent + _handed``
        now (transmitting only makes it less), so while that is under SEND_HIGH_WATER
        there is no need to ask it (a call into qh3 per flush)."""
        super().__init__(settings, owner, self._out)

    # --- wiring to the QUIC connection ----------------------------------------------

    def attach(self, protocol: QuicLink) -> None:
        self._protocol = protocol
        self._quic = protocol.quic

    def quic_ready(self, source: Any = None) -> None:
        """The QUIC handshake is done (SP) or the connection exists (SC): start ours.
        ``source``: the address of the first datagram (SC), when known."""
        if source is not None:
            self.core.learn_peer(f"{str(source[0]).removeprefix('::ffff:')}:{source[1]}")
        self._learn_peer()
        self._start()

    def _learn_peer(self) -> None:
        if self._protocol is not None:
            address = qh3_compat.remote_address(self._protocol.quic)
            if address is not None:
                host = str(address[0]).removeprefix("::ffff:")
                self.core.learn_peer(f"{host}:{address[1]}")

    def begin_batch(self) -> None:
        self._batching = True

    def end_batch(self) -> None:
        self._batching = False
        self.deliver_pending()
        core = self.core
        if core.deadline != self._timer_at:  # seldom: heartbeats move it, not data
            self._sync_timer()
        if core.paused:  # acknowledgements may have freed room: look once they are sent
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
        if not self._batching and self.core.deadline != self._timer_at:
            self._sync_timer()

    def _stream_data(self, quic_stream: int, data: bytes, end_stream: bool) -> None:
        core = self.core
        now = time.monotonic()
        core.heard(now)
        if core.peer == "?":
            self._learn_peer()
        decoder = self._decoders.get(quic_stream)
        if decoder is None:
            if quic_stream in self._out.ended and not core.streams.get(quic_stream):
                # Late data for a stream we already closed: ignore, count.
                core.dropped_frame(quic_stream, "data on an ended QUIC stream")
                return
            if core.role is Role.CONSUMER and quic_stream % 4 == 0 and quic_stream > 0:
                # Only the SC opens data streams: each one the SP opens would cost a decoder
                # holding up to a whole frame, thousands of them at once.
                core.protocol_failure(
                    RemoteProtocolError(
                        f"the SP opened QUIC stream {quic_stream}; only the SC opens streams"
                    ),
                    now,
                )
                return
            limit = MAX_PAYLOAD if core.authenticated else HANDSHAKE_MAX_PAYLOAD
            decoder = self._decoders[quic_stream] = FrameDecoder(limit)
        control = quic_stream == CONTROL_STREAM
        try:
            frames = self._decode(quic_stream, decoder, data)
            for _, stream_id, _ in frames:
                if stream_id != quic_stream:
                    raise RemoteProtocolError(
                        f"frame for stream {stream_id} arrived on QUIC stream {quic_stream}"
                    )
        except ProtocolError as exc:
            core.protocol_failure(exc, now)
        else:
            core.receive_frames(frames, now, control=control)
            if control and core.authenticated:
                decoder.max_payload = MAX_PAYLOAD
        if end_stream:
            self._drop_decoder(quic_stream)
            if control:
                core.shutdown(f"{self.core.role_peer} closed the control stream", now)
                return
            stream = core.streams.get(quic_stream)
            if stream is not None and not stream.eof_received:
                stream.receive_reset("QUIC stream ended without FIN")

    def _decode(self, quic_stream: int, decoder: FrameDecoder, data: bytes) -> list[RawFrame]:
        """The frames ``data`` completes; what stays in the decoder is charged to the
        pipe's budget (``LimitExceeded`` past it)."""
        core = self.core
        before = decoder.buffered
        frames = decoder.receive(data)
        held = decoder.buffered - before
        if held < 0:
            core.release(-held)
        elif held and not core.hold(held):
            self._decoders.pop(quic_stream, None)
            core.release(before)  # what it held before
            if self.closing:
                return []  # ended already, by an earlier stream of this batch
            raise LimitExceeded(
                f"incomplete frames on {len(self._decoders) + 1} QUIC streams would make the "
                f"pipe hold over its pipe_buffer of {core.status().pipe_buffer} B",
                Limit.PIPE_BUFFER,
            )
        return frames

    def _drop_decoder(self, quic_stream: int) -> None:
        decoder = self._decoders.pop(quic_stream, None)
        if decoder is not None:
            self.core.release(decoder.buffered)

    def quic_stream_reset(self, quic_stream: int) -> None:
        self.deliver_pending()
        self._drop_decoder(quic_stream)
        stream = self.core.streams.get(quic_stream)
        if stream is not None:
            stream.receive_reset(f"stream reset by {self.core.role_peer}")
        elif self._out.end_stream(quic_stream):
            self._schedule_flush()

    def peer_forgot(self) -> None:
        """SP: the SC answered that it has no such connection. Believed once the
        pipe is also quiet (the SC restarted); a notice that raced a connection
        id's retirement changes nothing while the SC is still heard from."""
        if self.closing:
            return
        silent = time.monotonic() - self.core.last_heard
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
        self._lost(reason)

    # --- CarrierPipe ----------------------------------------------------------------

    def _connected(self) -> bool:
        return self._protocol is not None

    def _flush(self) -> None:
        self._flush_scheduled = False
        protocol = self._protocol
        quic = self._quic
        if protocol is None or quic is None or self.closed.done():
            self._out.clear()
            return
        self._handed += self._out.queued
        queues, to_end = self._out.take()
        control = CONTROL_STREAM in queues
        for quic_stream, buffers in queues.items():
            try:
                last = buffers.pop()
                for data in buffers:  # qh3 copies each into its queue: none is joined here
                    quic.send_stream_data(quic_stream, data)
                quic.send_stream_data(
                    quic_stream,
                    bytes(last) if len(last) <= SMALL_SEND else last,
                    end_stream=quic_stream in to_end,
                )
            except Exception as exc:  # qh3 raises QuicConnectionError, ValueError, …
                # The peer reset or finished the stream already: nothing left to say on it.
                log.debug("%s: QUIC stream %d: %s", self, quic_stream, exc)
        for quic_stream in to_end.difference(queues) if to_end else ():  # only an end to send
            try:
                quic.send_stream_data(quic_stream, b"", end_stream=True)
            except Exception as exc:
                log.debug("%s: QUIC stream %d: %s", self, quic_stream, exc)
        protocol.transmit()
        if control:
            self._check_control_backlog(quic)
        if self.core.paused or self._unsent + self._handed > SEND_HIGH_WATER:
            self._check_send_backlog()

    def _schedule_flush(self) -> None:
        # Pause at once: one loop iteration may read many local sockets.
        out = self._out
        if not self.core.paused and self._unsent + self._handed + out.queued > SEND_HIGH_WATER:
            if self._handed:
                self._look_at_backlog()  # what qh3 holds now, not at most
            if self._unsent + self._handed + out.queued > SEND_HIGH_WATER:
                self.core.pause_writing()
        super()._schedule_flush()

    def _look_at_backlog(self) -> bool:
        """Ask qh3 what it holds untransmitted (``_unsent``); False: it cannot say (closed)."""
        quic = self._quic
        if quic is None or self.closed.done():
            return False
        try:
            self._unsent = quic.get_send_buffer_size()
        except Exception:  # closed meanwhile
            return False
        self._handed = 0
        return True

    def _check_send_backlog(self) -> None:
        """Pause the local sockets while qh3 holds more than SEND_HIGH_WATER unsent."""
        if not self._look_at_backlog():
            return
        backlog = self._unsent
        if not self.paused and backlog > SEND_HIGH_WATER:
            self.core.pause_writing()
        elif self.paused and backlog <= SEND_LOW_WATER:
            self.core.resume_writing()

    def _check_control_backlog(self, quic: QuicConnection) -> None:
        """Control frames the peer lets pile up (it grants no flow-control credit)."""
        try:
            queued = quic.get_send_buffer_size(CONTROL_STREAM)
        except Exception:  # closed meanwhile
            return
        self.core.control_backlog_exceeded(queued)

    def _close_transport(self) -> None:
        self._flush()
        self._close_quic(self.core.close_reason)

    def _abort_transport(self) -> None:
        if self.closed.done():
            return
        self._close_quic(self.core.close_reason or "aborted")
        self._lost(f"{self.core.role_peer} closed the connection")

    def _refuse(self, refusal: Refusal) -> None:
        """Turned away before the QUIC handshake: nothing is sent, the datagram is dropped."""
        self.core.refuse(refusal)
        self._lost(refusal.reason)

    def _close_quic(self, reason: str) -> None:
        protocol = self._protocol
        if protocol is None:
            return
        try:
            protocol.quic.close(error_code=0, reason_phrase=reason[:200])
            protocol.transmit()
        except Exception as exc:  # already closed by the peer or by a timeout
            log.debug("%s: closing QUIC: %s", self, exc)
        if protocol.is_client:
            protocol.close_transport_later()

    def _lost(self, reason: str) -> None:
        if self.closed.done():
            return
        super()._lost(reason)
        self._decoders.clear()
        self._rx_pending.clear()
