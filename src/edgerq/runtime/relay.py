"""The local end of a stream: one TCP socket relayed to and from a ``Stream``.

``LocalConnection`` reads the socket into a reusable buffer no larger than the
stream's send credit (nothing is read that cannot be sent) and writes what the
stream delivers, granting credit back once the socket took it. EOF becomes FIN
and FIN ``write_eof``; the socket closes once both directions are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import cast

from edgerq.labels import Outcome
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.messages import ResetCode

log = logging.getLogger("edgerq.relay")

READ_SIZE = 256 * 1024
"""Most bytes read from a socket at once (whatever request_buffer says); they leave as
DATA frames of at most the stream's ``max_frame`` (``defaults.DATA_FRAME`` or more)."""

PAUSED_CREDIT, PAUSED_PIPE, PAUSED_NOT_READY = 1, 2, 4
"""Why reading is paused (bits): no send credit, the pipe is full, not connected yet."""


_LINGER_RESET = struct.pack("ii", 1, 0)
"""SO_LINGER on, timeout 0: close() sends RST instead of FIN."""

_buffers = threading.local()


def _shared_view(size: int) -> memoryview:
    view: memoryview | None = getattr(_buffers, "view", None)
    if view is None or len(view) < size:
        view = memoryview(bytearray(size))
        _buffers.view = view
    return view[:size]


class LocalConnection(asyncio.BufferedProtocol):
    """A client socket (at the SC) or a service socket (at the SP) bound to one stream.

    Over 300 lines, as ``PipeConnection`` is: the per-byte path, both directions and
    their backpressure, reads best whole (the SC's per-client rest: ``ClientConnection``)."""

    def __init__(
        self,
        request_buffer: int,
        on_done: Callable[[LocalConnection], None] | None = None,
        on_connected: Callable[[LocalConnection], None] | None = None,
        preamble: bytes = b"",
        idle_timeout: float | None = None,
    ) -> None:
        self.stream: Stream | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.local = "?"
        self._preamble = preamble
        self._read_size = max(READ_SIZE, request_buffer)
        self._view = _shared_view(self._read_size)
        self._paused = PAUSED_NOT_READY
        self._pending: list[bytes] = []
        self._backlog = b""
        self.written = 0
        self.read_total = 0
        """Bytes read from the socket so far (sent on, or held back)."""
        self.watch_reads = False
        """Whether ``read_seen`` is told of every read (a subclass that must look at
        what arrives sets it, and clears it once done: the hot path only tests it)."""
        self.local_eof = False
        self.remote_eof = False
        self.done = False
        self.outcome = ""
        """How the connection ended, in words (for the log line)."""
        self.outcome_kind: Outcome | None = None
        """How the connection ended, as a metrics label; set once, with ``outcome``."""
        self.started = time.monotonic()
        self._on_done = on_done
        self._on_connected = on_connected
        self.idle_timeout = idle_timeout
        self.last_active = self.started
        """When a byte last moved either way (read from or written to the socket)."""
        self._idle_timer: asyncio.TimerHandle | None = None
        self._counted: tuple[Stream | None, int, int] = (None, 0, 0)
        """The stream whose bytes were last counted, and its (out, in) counts then."""
        self._window = 0
        """The stream window the write buffer's limits were set for."""
        self._buffered = 1
        """The transport's write buffer after our last write (1 before it: unknown). It
        only shrinks until the next, so 0 spares asking again (once per write, the hot path)."""

    # --- binding -----------------------------------------------------------------

    def bind(self, stream: Stream, pipe_paused: bool = False) -> None:
        """Attach the stream; reading starts (data may flow before OPEN_OK).

        ``pipe_paused``: the stream's pipe cannot take more now (``on_pipe_paused``
        says when that changes)."""
        self.stream = stream
        stream.sink = self
        self._limit_write_buffer()
        if pipe_paused:
            self._paused |= PAUSED_PIPE
        else:  # (re)bound to a pipe that is not paused, e.g. after a failover
            self._paused &= ~PAUSED_PIPE
        self._paused &= ~PAUSED_NOT_READY
        self.on_credit()

    def unbind(self) -> None:
        """Detach from a stream that is gone; reads are kept until ``bind`` again."""
        if self.stream is not None and self.stream.sink is self:
            self.stream.sink = None
        self.stream = None
        self._set_paused(PAUSED_NOT_READY, True)

    # --- asyncio.BufferedProtocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = f"{peer[0]}:{peer[1]}"
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local = f"{local[0]}:{local[1]}"
        # TCP_NODELAY is already set: uvloop and asyncio set it on every TCP
        # transport (asking for the socket here cost a socket object per connection).
        self._limit_write_buffer()
        if self.idle_timeout is not None:
            self.last_active = time.monotonic()
            self._idle_timer = asyncio.get_running_loop().call_later(
                self.idle_timeout, self._idle_check
            )
        if self._paused:
            transport.pause_reading()  # uvloop may still deliver one read: kept in _backlog
        if self._preamble:
            # Ahead of everything the stream delivered while connecting; not stream
            # bytes, so not counted in ``written`` (credit is granted for those only).
            transport.write(self._preamble)
            self._preamble = b""
            self._buffered = 1  # unknown: ask before the first write of a view
        if self._pending:
            for data in self._pending:
                self.on_data(data)
            self._pending.clear()
        if self.remote_eof:
            self._write_eof()
        if self._on_connected is not None:
            self._on_connected(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        # One buffer shared by every connection of this thread: buffer_updated()
        # copies the bytes out at once, so idle connections cost no buffer at all.
        credit = self.stream.send_credit if self.stream is not None else 0
        if credit <= 0 or credit >= self._read_size:  # the latter: most reads, no new view
            return self._view
        return self._view[:credit]

    def buffer_updated(self, nbytes: int) -> None:
        self.read_total += nbytes
        if self.watch_reads:
            self.read_seen(self._view[:nbytes])
        if self.idle_timeout is not None:
            self.last_active = time.monotonic()
        stream = self.stream
        if stream is None:
            self._backlog += self._view[:nbytes]
            self._set_paused(PAUSED_NOT_READY, True)
            return
        if self._backlog:  # keep the order: what waits for credit goes first
            self._backlog += self._view[:nbytes]
            self.on_credit()
            return
        credit = stream.send_credit
        if nbytes > credit:
            # Read past the credit (uvloop may deliver one read after pause_reading).
            if credit > 0:
                stream.send(self._view[:credit])
            self._backlog += self._view[max(credit, 0) : nbytes]
        else:
            stream.send(self._view[:nbytes])
        if stream.send_credit <= 0:
            self._set_paused(PAUSED_CREDIT, True)

    def read_seen(self, data: memoryview) -> None:
        """``data`` was just read (while ``watch_reads``), before it is sent on."""

    def eof_received(self) -> bool:
        self.local_eof = True
        if self.stream is not None and not self._backlog:
            self.stream.send_eof()
        self._maybe_close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        stream = self.stream
        if stream is not None and not stream.finished:
            if self.local_eof and self.remote_eof:
                pass
            elif exc is not None:
                stream.reset(ResetCode.CANCELLED, f"connection to {self.peer} failed: {exc}")
                self.set_outcome(Outcome.ERROR, f"local error: {exc}")
            else:
                stream.reset(ResetCode.CANCELLED, f"{self.peer} closed the connection")
                self.set_outcome(Outcome.CLOSED_EARLY, "closed early")
        self._finish()

    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        if self.stream is not None and self.transport is not None:
            self.stream.consumed(self.written - self.transport.get_write_buffer_size())

    # --- StreamSink ----------------------------------------------------------------

    def on_data(self, data: bytes | memoryview) -> None:
        """Write what the stream delivers (kept until connected); credit follows."""
        transport = self.transport
        if transport is None:
            self._pending.append(bytes(data))  # a view would pin the whole pipe read
            return
        if transport.is_closing():
            return
        if self._buffered and isinstance(data, memoryview) and transport.get_write_buffer_size():
            # Queued behind unsent bytes, a view of a pipe read would keep that
            # whole read (up to 256 KiB for a 4 KiB frame) alive: queue a copy,
            # so what a slow reader holds stays its window, not reads it shared.
            data = bytes(data)
        transport.write(data)
        self.written += len(data)
        if self.idle_timeout is not None:
            self.last_active = time.monotonic()
        buffered = self._buffered = transport.get_write_buffer_size()
        if self.stream is not None:
            self.stream.consumed(self.written - buffered)

    def on_eof(self) -> None:
        self.remote_eof = True
        if self.transport is not None:
            self._write_eof()

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        self.set_outcome(outcome, reason)
        self.abort()

    def on_credit(self) -> None:
        """Send what was read ahead of credit, then read again while credit lasts."""
        stream = self.stream
        if stream is None or stream.finished:
            return
        if stream.window != self._window:  # OPEN_OK granted less than the SC asked
            self._limit_write_buffer()
        if self._backlog and stream.send_credit > 0:
            chunk = self._backlog[: stream.send_credit]
            self._backlog = self._backlog[len(chunk) :]
            stream.send(chunk)
        if self._backlog:
            self._set_paused(PAUSED_CREDIT, True)
            return
        if self.local_eof:
            stream.send_eof()
            self._maybe_close()
            return
        self._set_paused(PAUSED_CREDIT, stream.send_credit <= 0)

    def on_pipe_paused(self, paused: bool) -> None:
        self._set_paused(PAUSED_PIPE, paused)

    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        """Only the SC's client connections await an answer (``ClientConnection``)."""

    # --- helpers -------------------------------------------------------------------

    def _limit_write_buffer(self) -> None:
        # Below 3/4 of the window, so credit is always granted back (see Stream.consumed).
        if self.stream is not None and self.transport is not None:
            self._window = self.stream.window
            high = min(64 * 1024, self.stream.window // 4)
            self.transport.set_write_buffer_limits(high=high, low=high // 4)

    def _write_eof(self) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._maybe_close()

    def _maybe_close(self) -> None:
        if self.local_eof and self.remote_eof and self.transport is not None:
            self.set_outcome(Outcome.OK, "ok")
            self.transport.close()

    def _set_paused(self, reason: int, paused: bool) -> None:
        if paused:
            self._paused |= reason
        else:
            self._paused &= ~reason
        self._update_reading()

    def _update_reading(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing() or self.local_eof:
            return
        reading = transport.is_reading()
        if self._paused and reading:
            transport.pause_reading()
        elif not self._paused and not reading:
            transport.resume_reading()

    def send_and_close(self, data: bytes) -> None:
        """Answer the client with ``data`` (an error page) and close."""
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        self.transport.close()

    def abort(self) -> None:
        """Cut the connection with a TCP reset, so the peer knows it was cut: a
        plain close would look like the natural end of a (truncated) reply."""
        transport = self.transport
        if transport is None:
            self._finish()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None and not transport.is_closing():
            with contextlib.suppress(OSError):  # already gone
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        transport.abort()

    def uncounted_bytes(self) -> tuple[int, int]:
        """The stream's bytes (sent, received) since the last call.

        Byte counters move while bytes flow: the daemon adds these at every
        scrape and once more when the connection ends, so nothing is counted on
        the hot path and a long keep-alive connection does not show 0 until it
        closes. After a failover the new stream is counted from 0.
        """
        stream = self.stream
        if stream is None:
            return 0, 0
        counted, out, in_ = self._counted
        if counted is not stream:
            out = in_ = 0
        self._counted = (stream, stream.bytes_out, stream.bytes_in)
        return stream.bytes_out - out, stream.bytes_in - in_

    def set_outcome(self, kind: Outcome, text: str) -> None:
        """Record how the connection ended, unless an earlier cause was recorded."""
        if self.outcome_kind is None:
            self.outcome_kind = kind
            self.outcome = text

    def _idle_check(self) -> None:
        """The idle timer: re-armed for the time left until it finds no byte moved for long."""
        timeout = self.idle_timeout
        assert timeout is not None
        self._idle_timer = None
        if self.done or self.transport is None or self.transport.is_closing():
            return
        left = self.last_active + timeout - time.monotonic()
        if left > 0:
            self._idle_timer = asyncio.get_running_loop().call_later(left, self._idle_check)
            return
        self.set_outcome(
            Outcome.IDLE_TIMEOUT, f"idle timeout ({timeout:g} s without a byte either way)"
        )
        self.idle_expired(timeout)

    def idle_expired(self, timeout: float) -> None:
        """No byte either way for ``timeout`` s: cut the connection (a reset)."""
        self.abort()

    @property
    def bytes_received(self) -> int:
        """Bytes read from this connection's socket so far (sent on, or held back)."""
        sent = self.stream.bytes_out if self.stream is not None else 0
        return sent + len(self._backlog)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._on_done is not None:
            self._on_done(self)
