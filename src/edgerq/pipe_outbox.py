"""Where a pipe connection puts the frames it sends, until its carrier takes them.

Pure data structures (no I/O): ``PipeConnection`` appends frames, the carrier
adapter takes them out once per loop iteration and writes them.

- ``ByteOutbox``: one byte stream (``tcp``, ``memory``): every frame appended
  to one buffer, written in one system call.
- ``StreamOutbox``: one queue per QUIC stream (``udp``), and the set of QUIC
  streams whose half should be ended.
"""

from __future__ import annotations

from typing import Protocol

from edgerq.protocol.frames import HEADER, FrameType, encode_data_header

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


class StreamOutbox:
    """Frames for QUIC streams: one queue per stream, and the streams to end."""

    __slots__ = ("ended", "queued", "queues", "to_end")

    def __init__(self) -> None:
        self.queued = 0
        """Bytes queued since the last ``take``."""
        self.queues: dict[int, list[bytes]] = {}
        self.to_end: set[int] = set()
        self.ended: set[int] = set()
        """QUIC streams whose sending half was ended: nothing more is queued for them."""

    def frame(self, data: bytes) -> None:
        self._queue(int.from_bytes(data[5:9], "big"), data)

    def data(self, stream_id: int, data: Payload, max_frame: int) -> None:
        n = len(data)
        if n <= max_frame:
            self._queue(stream_id, encode_data_header(stream_id, n) + bytes(data))
            return
        view = memoryview(data)
        for start in range(0, n, max_frame):
            chunk = view[start : start + max_frame]
            self._queue(stream_id, encode_data_header(stream_id, len(chunk)) + bytes(chunk))

    def _queue(self, quic_stream: int, data: bytes) -> None:
        if quic_stream in self.ended:
            return
        self.queued += len(data)
        queue = self.queues.get(quic_stream)
        if queue is None:
            self.queues[quic_stream] = [data]
        else:
            queue.append(data)

    def end_stream(self, stream_id: int) -> bool:
        if stream_id in self.ended:
            return False
        self.to_end.add(stream_id)
        return True

    def clear(self) -> None:
        self.queued = 0
        self.queues.clear()
        self.to_end.clear()

    def take(self) -> list[tuple[int, bytes, bool]]:
        """``(quic stream, data, end)`` for every stream with something to send."""
        out = [(s, b"".join(chunks), s in self.to_end) for s, chunks in self.queues.items()]
        out += [(s, b"", True) for s in self.to_end if s not in self.queues]
        self.ended |= self.to_end
        self.queued = 0
        self.queues.clear()
        self.to_end.clear()
        return out
