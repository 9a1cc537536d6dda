"""Where a pipe connection puts the frames it sends, until its carrier takes them.

Pure data structures (no I/O): ``PipeConnection`` appends frames, the carrier
adapter takes them out once per loop iteration and writes them.

- ``ByteOutbox``: one byte stream (``tcp``, ``memory``): every frame appended
  to one buffer, written in one system call.
- ``StreamOutbox``: a few buffers per QUIC stream (``udp``), each sent in one
  call, and the set of QUIC streams whose half should be ended.
"""

from __future__ import annotations

from typing import Protocol

from edgerq.protocol.frames import HEADER, HEADER_SIZE, FrameType

_DATA = int(FrameType.DATA)

Payload = bytes | bytearray | memoryview


class Outbox(Protocol):
    """What ``PipeConnection`` writes its frames to."""

    def frame(self, data: bytes) -> None:
        """Queue one encoded frame (its header names the stream)."""

    def data(self, stream_id: int, data: Payload, max_frame: int) -> None:
        """Queue ``data`` as DATA frames of at most ``max_frame`` bytes each."""

    def end_stream(self, stream_id: int) -> bool:
        """The stream is gone here: end its carrier-level stream, if it has one
        (True: that is something to send)."""

    def clear(self) -> None:
        """Drop everything queued (the connection is gone)."""


class ByteOutbox:
    """Frames for one byte stream, appended to one buffer."""

    __slots__ = ("buffer",)

    def __init__(self) -> None:
        self.buffer = bytearray()

    def frame(self, data: bytes) -> None:
        self.buffer += data

    def data(self, stream_id: int, data: Payload, max_frame: int) -> None:
        out = self.buffer
        n = len(data)
        if n <= max_frame:
            out += HEADER.pack(n, _DATA, stream_id)
            out += data
            return
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

    def end_stream(self, stream_id: int) -> bool:
        return False  # streams of a byte stream have no end of their own

    def clear(self) -> None:
        self.buffer.clear()

    def take(self) -> bytearray:
        """Everything queued (the caller may keep it: a fresh buffer takes its place)."""
        data = self.buffer
        self.buffer = bytearray()
        return data


PIECE = 64 * 1024
"""``StreamOutbox``: frames are gathered into buffers of about this size per QUIC
stream, each handed to qh3 in one call. A frame that does not fit in the stream's
last buffer starts a new one, so a full DATA frame is copied once (into its own
buffer, right after its header) and never again on our side."""


class StreamOutbox:
    """Frames for QUIC streams: one list of buffers per stream, and the streams to end.

    Every frame is copied once, into the stream's current buffer (its payload
    may be a view of a buffer its caller reuses); ``take`` hands those buffers
    over as they are, for one ``send_stream_data`` each (qh3 copies what it is
    given into its own send queue)."""

    __slots__ = ("ended", "queued", "queues", "to_end")

    def __init__(self) -> None:
        self.queued = 0
        """Bytes queued since the last ``take``."""
        self.queues: dict[int, list[bytearray]] = {}
        self.to_end: set[int] = set()
        self.ended: set[int] = set()
        """QUIC streams whose sending half was ended: nothing more is queued for them."""

    def frame(self, data: bytes) -> None:
        quic_stream = int.from_bytes(data[5:9], "big")
        if quic_stream not in self.ended:
            self._buffer(quic_stream, len(data)).extend(data)

    def data(self, stream_id: int, data: Payload, max_frame: int) -> None:
        if stream_id in self.ended:
            return
        n = len(data)
        if n <= max_frame:
            out = self._buffer(stream_id, HEADER_SIZE + n)
            out += HEADER.pack(n, _DATA, stream_id)
            out += data
            return
        view = memoryview(data)
        for start in range(0, n, max_frame):
            chunk = view[start : start + max_frame]
            size = len(chunk)
            out = self._buffer(stream_id, HEADER_SIZE + size)
            out += HEADER.pack(size, _DATA, stream_id)
            out += chunk

    def _buffer(self, quic_stream: int, size: int) -> bytearray:
        """The buffer of ``quic_stream`` to append a frame of ``size`` bytes to."""
        self.queued += size
        buffers = self.queues.get(quic_stream)
        if buffers is None:
            out = bytearray()
            self.queues[quic_stream] = [out]
            return out
        out = buffers[-1]
        if len(out) + size > PIECE:
            out = bytearray()
            buffers.append(out)
        return out

    def end_stream(self, stream_id: int) -> bool:
        if stream_id in self.ended:
            return False
        self.to_end.add(stream_id)
        return True

    def clear(self) -> None:
        self.queued = 0
        self.queues.clear()
        self.to_end.clear()

    def take(self) -> tuple[dict[int, list[bytearray]], set[int]]:
        """The buffers of every QUIC stream with something to send, and the streams
        whose half to end (some may have no buffers: only their end); the caller owns
        both. Nothing is built per stream: most flushes carry one stream's frames."""
        queues = self.queues
        to_end = self.to_end
        self.queued = 0
        self.queues = {}
        if to_end:
            self.ended |= to_end
            self.to_end = set()
        return queues, to_end
