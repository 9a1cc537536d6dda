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

from edgerq.errors import FrameError, LocalProtocolError

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
        raise LocalProtocolError(f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return HEADER.pack(len(payload), frame_type, stream_id) + payload


class FrameDecoder:
    """Incremental decoder: ``feed(bytes)``, then iterate ``frames()``; or ``receive``.

    ``max_payload`` may be raised once the peer is authenticated. After a
    ``FrameError`` the decoder stays broken: the pipe must be closed.
    """

    __slots__ = ("_broken", "_buffer", "_data_left", "_data_stream", "_stream_data", "max_payload")

    def __init__(
        self, max_payload: int = HANDSHAKE_MAX_PAYLOAD, *, stream_data: bool = False
    ) -> None:
        """``stream_data``: ``receive`` delivers a DATA frame split across reads piecewise
        (one byte stream per pipe: the ``tcp`` carrier), instead of staging it whole."""
        self._buffer = bytearray()
        self._broken = False
        self._stream_data = stream_data
        self._data_left = 0
        """``receive``: bytes of a DATA frame's payload still to come (its start was
        delivered already), for stream ``_data_stream``."""
        self._data_stream = 0
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        """Bytes received that do not yet form a whole frame (a DATA frame's payload
        is delivered as it arrives: only headers and control frames wait here)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self._buffer += data

    def frames(self) -> list[Frame]:
        """Return every complete frame buffered so far (possibly none)."""
        return [Frame(FrameType(t), sid, bytes(payload)) for t, sid, payload in self.raw_frames()]

    def receive(self, data: bytes) -> list[RawFrame]:
        """Feed ``data`` and return the frames it completes as ``(type, stream_id, payload)``.

        The fast path of the pipe: payloads are sliced straight out of ``data``
        as zero-copy views. With ``stream_data``, a DATA frame (a run of bytes of
        its stream) split across reads is delivered piecewise as its bytes arrive
        (several DATA tuples, together its payload), never staged: a large frame
        costs no copy, and only a header or a control frame split across reads is
        staged. Without it, any frame split across reads is staged until whole.
        """
        view = memoryview(data)
        buffer = self._buffer
        if not buffer and not self._data_left:  # most reads: whole frames from the start
            out, pos = self._parse(view, stream_data=self._stream_data)
            if pos < len(view):
                buffer += view[pos:]
            return out
        if self._broken:
            raise FrameError("decoder already failed; the pipe must be closed")
        out = []
        if self._data_left:
            view = self._continue_data(view, out)
        if buffer:
            have = len(buffer)
            if have < HEADER_SIZE:
                take = min(HEADER_SIZE - have, len(view))
                buffer += view[:take]
                view = view[take:]
                if len(buffer) < HEADER_SIZE:
                    return out
            length, ftype, stream_id = HEADER.unpack_from(buffer)
            self._check(length, ftype)
            if ftype == _DATA and self._stream_data:  # only its header was staged
                buffer.clear()
                if length == 0:
                    out.append((ftype, stream_id, b""))
                else:
                    self._data_left = length
                    self._data_stream = stream_id
                    view = self._continue_data(view, out)
            else:
                missing = HEADER_SIZE + length - len(buffer)
                if missing > len(view):
                    buffer += view
                    return out
                buffer += view[:missing]
                out.append((ftype, stream_id, bytes(buffer[HEADER_SIZE:])))
                buffer.clear()
                view = view[missing:]
        if view:
            more, pos = self._parse(view, stream_data=self._stream_data)
            out += more
            if pos < len(view):
                buffer += view[pos:]
        return out

    def _continue_data(self, view: memoryview, out: list[RawFrame]) -> memoryview:
        """Deliver what ``view`` holds of the DATA payload still to come; the rest of it."""
        take = min(self._data_left, len(view))
        if take:
            out.append((_DATA, self._data_stream, view[:take]))
            self._data_left -= take
        return view[take:]

    def _check(self, length: int, ftype: int) -> None:
        if ftype not in _KNOWN_TYPES:
            self._broken = True
            raise FrameError(f"unknown frame type {ftype}")
        if length > self.max_payload:
            self._broken = True
            raise FrameError(f"frame of {length} bytes exceeds the limit of {self.max_payload}")

    def raw_frames(self) -> list[RawFrame]:
        """Like ``frames()``, as plain tuples with the type as an ``int``."""
        out, pos = self._parse(self._buffer)
        if pos:
            del self._buffer[:pos]
        return out

    def _parse(
        self, buf: bytes | bytearray | memoryview, stream_data: bool = False
    ) -> tuple[list[RawFrame], int]:
        """The whole frames at the head of ``buf``, and where they end. ``stream_data``
        (``receive``): a DATA frame cut short is delivered as far as it goes, and the
        decoder remembers how much of it is still to come."""
        if self._broken:
            raise FrameError("decoder already failed; the pipe must be closed")
        out: list[RawFrame] = []
        pos = 0
        end = len(buf)
        unpack = HEADER.unpack_from
        limit = self.max_payload
        while end - pos >= HEADER_SIZE:
            length, ftype, stream_id = unpack(buf, pos)
            if ftype not in _KNOWN_TYPES or length > limit:
                self._check(length, ftype)
            stop = pos + HEADER_SIZE + length
            if stop > end:
                if stream_data and ftype == _DATA and isinstance(buf, memoryview):
                    start = pos + HEADER_SIZE
                    if start < end:
                        out.append((ftype, stream_id, buf[start:end]))
                    self._data_left = stop - end
                    self._data_stream = stream_id
                    pos = end
                break
            # A view of immutable received bytes may be kept; the staging
            # bytearray is trimmed after parsing, so its slices are copied.
            if isinstance(buf, memoryview):
                out.append((ftype, stream_id, buf[pos + HEADER_SIZE : stop]))
            else:
                out.append((ftype, stream_id, bytes(buf[pos + HEADER_SIZE : stop])))
            pos = stop
        return out, pos
