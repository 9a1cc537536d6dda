"""Frames of the pipe protocol: encoding and an incremental decoder.

Every frame is a 9-byte header followed by its payload::

    length: u32   payload length in bytes (not counting the header)
    type:   u8    a FrameType
    stream: u32   stream id (0 for pipe-level frames)

Integers are big-endian. The decoder never touches a socket: feed it bytes,
take frames out. Anything it cannot accept raises ``FrameError``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from edgerq.errors import FrameError

HEADER = struct.Struct(">IBI")
HEADER_SIZE = HEADER.size

MAX_PAYLOAD = 1024 * 1024
"""Largest payload any frame may carry once a pipe is authenticated."""

HANDSHAKE_MAX_PAYLOAD = 4096
"""Largest payload accepted before the peer has proven who it is."""


class FrameType(IntEnum):
    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    AUTH_OK = 4
    REGISTER = 5
    REGISTERED = 6
    PING = 7
    PONG = 8
    OPEN = 9
    OPEN_OK = 10
    OPEN_FAIL = 11
    DATA = 12
    WINDOW = 13
    FIN = 14
    RESET = 15
    GOAWAY = 16


RawFrame = tuple[int, int, bytes | memoryview]
"""(frame type, stream id, payload): what the pipe's hot path handles. A payload
sliced straight out of received ``bytes`` is a zero-copy ``memoryview``."""

_KNOWN_TYPES = frozenset(int(t) for t in FrameType)
_DATA = int(FrameType.DATA)


@dataclass(frozen=True, slots=True)
class Frame:
    type: FrameType
    stream_id: int
    payload: bytes

    def encode(self) -> bytes:
        return encode_frame(self.type, self.stream_id, self.payload)


def encode_frame(frame_type: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    """Return the wire bytes of one frame."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), frame_type, stream_id) + payload


def encode_data_header(stream_id: int, length: int) -> bytes:
    return HEADER.pack(length, _DATA, stream_id)


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then iterate ``frames()``.

    ``max_payload`` may be raised once the peer is authenticated. After a
    ``FrameError`` the decoder stays broken: the pipe must be closed.
    """

    __slots__ = ("_broken", "_buffer", "max_payload")

    def __init__(self, max_payload: int = HANDSHAKE_MAX_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._broken = False
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def frames(self) -> list[Frame]:
        """Return every complete frame buffered so far (possibly none)."""
        return [Frame(FrameType(t), sid, bytes(payload)) for t, sid, payload in self.raw_frames()]

    def receive(self, data: bytes) -> list[RawFrame]:
        """Feed ``data`` and return the complete frames as ``(type, stream_id, payload)``.

        The fast path of the pipe: frames are sliced straight out of ``data``
        as zero-copy views. Only a frame split across reads is staged: what
        was left over is completed from the head of ``data``, and the rest of
        ``data`` is parsed in place.
        """
        view = memoryview(data)
        buffer = self._buffer
        if not buffer:
            out, pos = self._parse(view)
            if pos < len(view):
                buffer += view[pos:]
            return out
        have = len(buffer)
        if have < HEADER_SIZE:
            take = min(HEADER_SIZE - have, len(view))
            buffer += view[:take]
            view = view[take:]
            if len(buffer) < HEADER_SIZE:
                return []
        # Validates the header (raising as soon as it is whole), and returns
        # the frame once its payload is complete.
        missing = HEADER_SIZE + HEADER.unpack_from(buffer)[0] - len(buffer)
        if missing > len(view):
            self._parse(buffer)
            buffer += view
            return []
        buffer += view[:missing]
        out, _ = self._parse(buffer)
        buffer.clear()
        more, pos = self._parse(view[missing:])
        out += more
        if missing + pos < len(view):
            buffer += view[missing + pos :]
        return out

    def raw_frames(self) -> list[RawFrame]:
        """Like ``frames()``, as plain tuples with the type as an ``int``."""
        out, pos = self._parse(self._buffer)
        if pos:
            del self._buffer[:pos]
        return out

    def _parse(self, buf: bytes | bytearray | memoryview) -> tuple[list[RawFrame], int]:
        if self._broken:
            raise FrameError("decoder already failed; the pipe must be closed")
        out: list[RawFrame] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        limit = self.max_payload
        while end - pos >= HEADER_SIZE:
            length, ftype, stream_id = unpack(buf, pos)
            if ftype not in _KNOWN_TYPES:
                self._broken = True
                raise FrameError(f"unknown frame type {ftype}")
            if length > limit:
                self._broken = True
                raise FrameError(f"frame of {length} bytes exceeds the limit of {limit}")
            stop = pos + HEADER_SIZE + length
            if stop > end:
                break
            # A view of immutable received bytes may be kept; the staging
            # bytearray is trimmed after parsing, so its slices are copied.
            if isinstance(buf, memoryview):
                out.append((ftype, stream_id, buf[pos + HEADER_SIZE : stop]))
            else:
                out.append((ftype, stream_id, bytes(buf[pos + HEADER_SIZE : stop])))
            pos = stop
        return out, pos
