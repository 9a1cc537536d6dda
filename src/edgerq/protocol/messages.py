"""Typed payloads of the control frames, with strict decoding.

Each message knows its frame type; ``encode()`` gives a whole frame and
``decode(payload)`` raises ``FrameError`` on anything malformed.
"""

from __future__ import annotations

import struct
import uuid as uuid_mod
from dataclasses import dataclass
from enum import IntEnum

from edgerq.errors import FrameError
from edgerq.protocol.frames import FrameType, encode_frame

MAGIC = b"EDGERQ"
NONCE_SIZE = 32
MAC_SIZE = 32


class RegisterStatus(IntEnum):
    ACCEPTED = 0
    UNKNOWN_SERVICE = 1


class OpenFailure(IntEnum):
    """Why the SP could not open a stream to its service."""

    UNKNOWN_SERVICE = 1
    CONNECT_REFUSED = 2
    CONNECT_TIMEOUT = 3
    CONNECT_ERROR = 4
    DRAINING = 5
    """The SP is shutting down and takes no new streams (the SC tries another pipe)."""


class ResetCode(IntEnum):
    CANCELLED = 0
    LOCAL_ERROR = 1
    # 2 was PIPE_CLOSED, never sent: reserved, so older peers' frames stay readable.
    FLOW_CONTROL = 3


class GoawayCode(IntEnum):
    NORMAL = 0
    PROTOCOL_ERROR = 1
    VERSION_MISMATCH = 2
    AUTH_FAILED = 3
    # 4 was HEARTBEAT_TIMEOUT, never sent (a silent pipe is aborted): reserved.
    SHUTDOWN = 5
    DRAINING = 6
    """Not a close: no new streams on this pipe; open ones finish, then it closes."""
    LIMIT_EXCEEDED = 7


def _utf8_prefix(text: str, limit: int) -> bytes:
    """``text`` as UTF-8, cut to at most ``limit`` bytes on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore").encode("utf-8")


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError(f"{what} is not UTF-8") from exc


@dataclass(frozen=True, slots=True)
class Hello:
    """SP -> SC, first frame on a pipe."""

    min_version: int
    max_version: int
    nonce: bytes
    name: str

    _FIXED = struct.Struct(">6sBB32s")

    def encode(self) -> bytes:
        name = _utf8_prefix(self.name, 255)
        body = self._FIXED.pack(MAGIC, self.min_version, self.max_version, self.nonce) + name
        return encode_frame(FrameType.HELLO, 0, body)

    @classmethod
    def decode(cls, payload: bytes) -> Hello:
        if len(payload) < cls._FIXED.size or payload[:6] != MAGIC:
            raise FrameError("not an edgerq pipe (bad hello)")
        _, lo, hi, nonce = cls._FIXED.unpack_from(payload)
        if lo > hi:
            raise FrameError(f"hello offers an empty version range {lo}..{hi}")
        return cls(lo, hi, nonce, _text(payload[cls._FIXED.size :], "pipe name"))


@dataclass(frozen=True, slots=True)
class Challenge:
    """SC -> SP: the chosen version and the SC's nonce."""

    version: int
    auth_required: bool
    nonce: bytes

    _FIXED = struct.Struct(">BB32s")

    def encode(self) -> bytes:
        body = self._FIXED.pack(self.version, 1 if self.auth_required else 0, self.nonce)
        return encode_frame(FrameType.CHALLENGE, 0, body)

    @classmethod
    def decode(cls, payload: bytes) -> Challenge:
        if len(payload) != cls._FIXED.size:
            raise FrameError("malformed challenge")
        version, flags, nonce = cls._FIXED.unpack(payload)
        return cls(version, bool(flags & 1), nonce)


@dataclass(frozen=True, slots=True)
class Proof:
    """AUTH (SP -> SC) or AUTH_OK (SC -> SP): an HMAC, or empty without a token."""

    frame_type: FrameType
    mac: bytes

    def encode(self) -> bytes:
        return encode_frame(self.frame_type, 0, self.mac)

    @classmethod
    def decode(cls, frame_type: FrameType, payload: bytes) -> Proof:
        if len(payload) not in (0, MAC_SIZE):
            raise FrameError("malformed authentication proof")
        return cls(frame_type, payload)


@dataclass(frozen=True, slots=True)
class Register:
    """SP -> SC: the service UUIDs this SP offers on the pipe."""

    uuids: tuple[uuid_mod.UUID, ...]

    def encode(self) -> bytes:
        body = struct.pack(">H", len(self.uuids)) + b"".join(u.bytes for u in self.uuids)
        return encode_frame(FrameType.REGISTER, 0, body)

    @classmethod
    def decode(cls, payload: bytes) -> Register:
        if len(payload) < 2:
            raise FrameError("malformed register")
        (count,) = struct.unpack_from(">H", payload)
        if len(payload) != 2 + 16 * count:
            raise FrameError("register length does not match its count")
        return cls(
            tuple(uuid_mod.UUID(bytes=payload[2 + 16 * i : 18 + 16 * i]) for i in range(count))
        )


@dataclass(frozen=True, slots=True)
class Registered:
    """SC -> SP: one answer per offered UUID."""

    results: tuple[tuple[uuid_mod.UUID, RegisterStatus], ...]

    def encode(self) -> bytes:
        body = struct.pack(">H", len(self.results)) + b"".join(
            u.bytes + bytes([status]) for u, status in self.results
        )
        return encode_frame(FrameType.REGISTERED, 0, body)

    @classmethod
    def decode(cls, payload: bytes) -> Registered:
        if len(payload) < 2:
            raise FrameError("malformed registration answer")
        (count,) = struct.unpack_from(">H", payload)
        if len(payload) != 2 + 17 * count:
            raise FrameError("registration answer length does not match its count")
        results = []
        for i in range(count):
            base = 2 + 17 * i
            try:
                status = RegisterStatus(payload[base + 16])
            except ValueError as exc:
                raise FrameError(f"unknown registration status {payload[base + 16]}") from exc
            results.append((uuid_mod.UUID(bytes=payload[base : base + 16]), status))
        return cls(tuple(results))


@dataclass(frozen=True, slots=True)
class Open:
    """SC -> SP: open stream ``stream_id`` to the service ``uuid``.

    The text after the fixed part is ``client`` (the client's ``host:port``)
    and, after one space, ``destination`` (the SC's address the client
    connected to). Older SCs send the client alone, and older SPs read the
    whole text as the client, so either side may be older.
    """

    stream_id: int
    uuid: uuid_mod.UUID
    window: int
    max_frame: int
    client: str
    destination: str = ""

    _FIXED = struct.Struct(">16sII")
    _TEXT_LIMIT = 255

    def __post_init__(self) -> None:
        if " " in self.client:
            raise ValueError(f"client address {self.client!r} contains a space")

    def encode(self) -> bytes:
        body = self._FIXED.pack(self.uuid.bytes, self.window, self.max_frame)
        text = f"{self.client} {self.destination}" if self.destination else self.client
        if len(text.encode("utf-8")) > self._TEXT_LIMIT:
            text = self.client  # never a cut destination: the SP would read a wrong one
        return encode_frame(
            FrameType.OPEN, self.stream_id, body + _utf8_prefix(text, self._TEXT_LIMIT)
        )

    @classmethod
    def decode(cls, stream_id: int, payload: bytes) -> Open:
        if len(payload) < cls._FIXED.size:
            raise FrameError("malformed open")
        raw, window, max_frame = cls._FIXED.unpack_from(payload)
        if window == 0 or max_frame == 0:
            raise FrameError("open with a zero window or frame size")
        client, space, destination = _text(payload[cls._FIXED.size :], "client address").partition(
            " "
        )
        if space and not destination:  # never sent: one reading of each OPEN only
            raise FrameError("open with a separator but no destination")
        return cls(stream_id, uuid_mod.UUID(bytes=raw), window, max_frame, client, destination)


@dataclass(frozen=True, slots=True)
class CodedReason:
    """OPEN_FAIL, RESET or GOAWAY: a code and a human reason."""

    frame_type: FrameType
    stream_id: int
    code: int
    reason: str

    def encode(self) -> bytes:
        body = bytes([self.code]) + _utf8_prefix(self.reason, 512)
        return encode_frame(self.frame_type, self.stream_id, body)

    @classmethod
    def decode(cls, frame_type: FrameType, stream_id: int, payload: bytes) -> CodedReason:
        if not payload:
            raise FrameError(f"{frame_type.name} without a code")
        return cls(frame_type, stream_id, payload[0], _text(payload[1:], "reason"))


WINDOW_BODY = struct.Struct(">I")
PING_BODY = struct.Struct(">Q")


def encode_window(stream_id: int, increment: int) -> bytes:
    return encode_frame(FrameType.WINDOW, stream_id, WINDOW_BODY.pack(increment))


def decode_window(payload: bytes) -> int:
    if len(payload) != WINDOW_BODY.size:
        raise FrameError("malformed window update")
    (increment,) = WINDOW_BODY.unpack(payload)
    if increment == 0:
        raise FrameError("window update of zero")
    return int(increment)


def encode_open_ok(stream_id: int, window: int) -> bytes:
    """OPEN_OK with the window the SP granted (older SPs send it empty; older SCs ignore it)."""
    return encode_frame(FrameType.OPEN_OK, stream_id, WINDOW_BODY.pack(window))


def decode_open_ok(payload: bytes) -> int | None:
    """The window an OPEN_OK grants, or None when it names none (an older SP)."""
    if not payload:
        return None
    if len(payload) != WINDOW_BODY.size:
        raise FrameError("malformed open answer")
    (window,) = WINDOW_BODY.unpack(payload)
    if window == 0:
        raise FrameError("open answer grants a zero window")
    return int(window)


def decode_ping(payload: bytes) -> int:
    if len(payload) != PING_BODY.size:
        raise FrameError("malformed ping")
    return int(PING_BODY.unpack(payload)[0])


def encode_ping(frame_type: FrameType, value: int) -> bytes:
    return encode_frame(frame_type, 0, PING_BODY.pack(value))
