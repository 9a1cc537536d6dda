"""Properties of the protocol decoders, shared by a short run in ``make test``
(tests/unit/protocol/test_fuzz.py) and a time-boxed long run in the fault
suite (tests/fault/test_fuzz.py).

Each ``check_*`` function takes plain values, so Hypothesis can drive it with
any settings profile. What must hold for any input at all:

- the frame decoder yields frames or raises ``FrameError`` (never another
  exception), however the same bytes are split across reads and whichever of
  its two entry points (``feed``/``frames`` or the zero-copy ``receive``) is
  used; what it yields matches a plain reference parser of the whole input;
- it never holds more than one incomplete frame (header + ``max_payload``)
  once it has parsed what it was given: memory stays bounded;
- every control-message decoder returns a value or raises ``FrameError``;
- the handshake state machines answer with well-formed frames or raise a
  ``ProtocolError``; a peer that does not know the token never authenticates.
"""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from edgerq.errors import FrameError, RemoteProtocolError
from edgerq.protocol.frames import (
    HANDSHAKE_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
)
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake
from edgerq.protocol.messages import (
    MAC_SIZE,
    NONCE_SIZE,
    Challenge,
    CodedReason,
    Hello,
    Open,
    Proof,
    Register,
    Registered,
    RegisterStatus,
    decode_ping,
    decode_window,
    encode_ping,
    encode_window,
)

# --- the frame decoder ---------------------------------------------------------

LIMITS = [0, 16, HANDSHAKE_MAX_PAYLOAD, MAX_PAYLOAD]


@dataclass(frozen=True)
class Reference:
    """What a whole input must decode to: the frames before any bad header,
    whether a bad header follows them, and the bytes of an incomplete tail."""

    frames: list[Frame]
    error: bool
    tail: int


def reference_parse(data: bytes, max_payload: int) -> Reference:
    """A deliberately plain parser of the frame format, to check the real one against."""
    frames: list[Frame] = []
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        length, ftype, stream_id = HEADER.unpack_from(data, pos)
        if ftype not in {int(t) for t in FrameType} or length > max_payload:
            return Reference(frames, True, 0)
        if pos + HEADER_SIZE + length > len(data):
            break
        frames.append(
            Frame(FrameType(ftype), stream_id, data[pos + HEADER_SIZE : pos + HEADER_SIZE + length])
        )
        pos += HEADER_SIZE + length
    return Reference(frames, False, len(data) - pos)


_segment = st.one_of(
    # A well-formed frame of any type.
    st.builds(
        encode_frame,
        st.sampled_from(list(FrameType)),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=120),
    ),
    # A header with any type and a length near the interesting limits, and a body.
    st.builds(
        lambda length, ftype, sid, body: HEADER.pack(length, ftype, sid) + body,
        st.one_of(
            st.integers(0, 64),
            st.sampled_from([lim + d for lim in LIMITS for d in (-1, 0, 1) if lim + d >= 0]),
            st.integers(0, 2**32 - 1),
        ),
        st.one_of(st.sampled_from([int(t) for t in FrameType]), st.integers(0, 255)),
        st.integers(0, 2**32 - 1),
        st.binary(max_size=80),
    ),
    # Anything at all.
    st.binary(max_size=40),
)

wire_bytes = st.lists(_segment, max_size=10).map(b"".join)
"""Inputs that mix valid frames, hostile headers and garbage."""

limits = st.sampled_from(LIMITS)


def check_decoder(data: bytes, max_payload: int, cuts: list[int], modes: list[bool]) -> None:
    """Feed ``data`` cut at ``cuts`` (modulo its length); ``modes[i]`` picks ``receive`` (True) or
    ``feed``+``raw_frames`` for chunk ``i``. Compare with the reference parse."""
    ref = reference_parse(data, max_payload)
    decoder = FrameDecoder(max_payload)
    got: list[Frame] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    raised = False
    for index, (start, stop) in enumerate(itertools.pairwise(bounds)):
        chunk = data[start:stop]
        try:
            if modes and modes[index % len(modes)]:
                raw = decoder.receive(chunk)
            else:
                decoder.feed(chunk)
                raw = decoder.raw_frames()
        except FrameError:
            raised = True
            break
        # Payloads may be views into ``chunk``: copy before anything else happens.
        got.extend(Frame(FrameType(t), sid, bytes(p)) for t, sid, p in raw)
        # Parsed as far as possible: at most one incomplete frame is kept.
        assert decoder.buffered < HEADER_SIZE + max_payload
        assert decoder.buffered <= stop
    assert raised == ref.error, f"decoder raised={raised}, reference error={ref.error}"
    if raised:
        # Frames before the bad header may or may not have been handed out
        # (those of the failing read are dropped), but never anything else.
        assert got == ref.frames[: len(got)]
        try:
            decoder.feed(b"\0" * HEADER_SIZE)
            decoder.raw_frames()
        except FrameError:
            pass
        else:
            raise AssertionError("a failed decoder accepted more input")
    else:
        assert got == ref.frames
        assert decoder.buffered == ref.tail


# --- control messages ----------------------------------------------------------

U1 = uuid.UUID("11111111-2222-3333-4444-555555555555")

DECODERS: dict[FrameType, Callable[[bytes], Any]] = {
    FrameType.HELLO: Hello.decode,
    FrameType.CHALLENGE: Challenge.decode,
    FrameType.AUTH: lambda p: Proof.decode(FrameType.AUTH, p),
    FrameType.AUTH_OK: lambda p: Proof.decode(FrameType.AUTH_OK, p),
    FrameType.REGISTER: Register.decode,
    FrameType.REGISTERED: Registered.decode,
    FrameType.OPEN: lambda p: Open.decode(1, p),
    FrameType.OPEN_FAIL: lambda p: CodedReason.decode(FrameType.OPEN_FAIL, 1, p),
    FrameType.RESET: lambda p: CodedReason.decode(FrameType.RESET, 1, p),
    FrameType.GOAWAY: lambda p: CodedReason.decode(FrameType.GOAWAY, 0, p),
    FrameType.WINDOW: decode_window,
    FrameType.PING: decode_ping,
    FrameType.PONG: decode_ping,
}

VALID_PAYLOADS: list[bytes] = [
    wire[HEADER_SIZE:]
    for wire in (
        Hello(1, 1, b"n" * NONCE_SIZE, "pipé-1").encode(),
        Challenge(1, True, b"c" * NONCE_SIZE).encode(),
        Proof(FrameType.AUTH, b"m" * MAC_SIZE).encode(),
        Register((U1, uuid.UUID(int=7))).encode(),
        Registered(((U1, RegisterStatus.ACCEPTED),)).encode(),
        Open(1, U1, 65536, 16384, "127.0.0.1:5555", "é.example:443").encode(),
        CodedReason(FrameType.GOAWAY, 0, 1, "bye €").encode(),
        encode_window(1, 4096),
        encode_ping(FrameType.PING, 42),
    )
]


def _mutate(base: bytes, flips: list[tuple[int, int]], cut: int | None, extra: bytes) -> bytes:
    out = bytearray(base)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    if cut is not None:
        del out[cut % (len(out) + 1) :]
    return bytes(out) + extra


message_payloads = st.one_of(
    st.binary(max_size=120),
    st.builds(
        _mutate,
        st.sampled_from(VALID_PAYLOADS),
        st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=4),
        st.one_of(st.none(), st.integers(0, 1000)),
        st.binary(max_size=8),
    ),
)


def _body(wire: bytes) -> bytes:
    return wire[HEADER_SIZE:]


ENCODERS: dict[FrameType, Callable[[Any], bytes]] = {
    FrameType.WINDOW: lambda v: _body(encode_window(1, v)),
    FrameType.PING: lambda v: _body(encode_ping(FrameType.PING, v)),
    FrameType.PONG: lambda v: _body(encode_ping(FrameType.PONG, v)),
    **{
        t: (lambda v: _body(v.encode()))
        for t in DECODERS
        if t not in (FrameType.WINDOW, FrameType.PING, FrameType.PONG)
    },
}


def check_message(frame_type: FrameType, payload: bytes) -> None:
    decode = DECODERS.get(frame_type)
    if decode is None:
        return  # DATA and FIN carry no structure to decode
    try:
        value = decode(payload)
    except FrameError:
        return
    # What was accepted is what we would send for that value, byte for byte
    # but reserved flag bits: as long as the payload (nothing skipped or left
    # over), and read back to the same value.
    wire = ENCODERS[frame_type](value)
    assert len(wire) == len(payload), (frame_type, value, payload)
    assert decode(wire) == value, (frame_type, value, payload)


# --- values, encoded and read back ----------------------------------------------

_text = st.text(st.characters(codec="utf-8"), max_size=140)
_u32, _nonce = st.integers(0, 2**32 - 1), st.binary(min_size=NONCE_SIZE, max_size=NONCE_SIZE)


@st.composite
def _hello(draw: st.DrawFn) -> Hello:
    low = draw(st.integers(0, 255))
    return Hello(low, draw(st.integers(low, 255)), draw(_nonce), draw(_text))


@st.composite
def _open(draw: st.DrawFn) -> Open:
    client = draw(_text.map(lambda s: s.replace(" ", "")))
    return Open(
        draw(_u32),
        draw(st.uuids()),
        draw(st.integers(1, 2**32 - 1)),
        draw(st.integers(1, 2**32 - 1)),
        client,
        draw(_text),
    )


messages = st.one_of(
    _hello(),
    st.builds(Challenge, st.integers(0, 255), st.booleans(), _nonce),
    st.builds(
        Proof,
        st.sampled_from([FrameType.AUTH, FrameType.AUTH_OK]),
        st.sampled_from([b"", b"\x5a" * MAC_SIZE]),
    ),
    st.builds(Register, st.lists(st.uuids(), max_size=20).map(tuple)),
    st.builds(
        Registered,
        st.lists(st.tuples(st.uuids(), st.sampled_from(list(RegisterStatus))), max_size=20).map(
            tuple
        ),
    ),
    _open(),
    st.builds(
        CodedReason,
        st.sampled_from([FrameType.OPEN_FAIL, FrameType.RESET, FrameType.GOAWAY]),
        _u32,
        st.integers(0, 255),
        st.text(st.characters(codec="utf-8"), max_size=300),
    ),
    st.builds(lambda n: (FrameType.WINDOW, 9, n), st.integers(1, 2**32 - 1)),
    st.builds(
        lambda kind, n: (kind, 0, n),
        st.sampled_from([FrameType.PING, FrameType.PONG]),
        st.integers(0, 2**64 - 1),
    ),
)
"""Any value a peer may send; window and ping values as (type, stream id, value)."""


def _prefix(text: str, limit: int) -> str:
    return text.encode()[:limit].decode("utf-8", "ignore")


def _as_sent(value: Any) -> tuple[bytes, Any, FrameType, int]:
    """(wire, the value the peer must read, frame type, stream id): text longer than
    the wire allows arrives cut on a character boundary (an OPEN drops a destination
    that does not fit whole), everything else exactly as generated."""
    if isinstance(value, tuple):
        kind, sid, n = value
        wire = encode_window(sid, n) if kind == FrameType.WINDOW else encode_ping(kind, n)
        return wire, n, kind, sid
    wire = value.encode()
    _, kind, sid = HEADER.unpack_from(wire)
    if isinstance(value, Hello):
        value = dataclasses.replace(value, name=_prefix(value.name, 255))
    elif isinstance(value, CodedReason):
        value = dataclasses.replace(value, reason=_prefix(value.reason, 512))
    elif isinstance(value, Open):
        whole = f"{value.client} {value.destination}" if value.destination else value.client
        if len(whole.encode()) > 255:
            value = dataclasses.replace(value, client=_prefix(value.client, 255), destination="")
    return wire, value, FrameType(kind), sid


def check_encoded_message(value: Any) -> None:
    """What we send is one frame, and the peer's decoder reads back the value sent."""
    wire, expected, kind, sid = _as_sent(value)
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoder.feed(wire)
    frames = decoder.frames()
    assert decoder.buffered == 0 and len(frames) == 1, wire
    frame = frames[0]
    assert (frame.type, frame.stream_id) == (kind, sid)
    if kind == FrameType.OPEN:
        decoded: Any = Open.decode(frame.stream_id, frame.payload)
    elif kind in (FrameType.OPEN_FAIL, FrameType.RESET, FrameType.GOAWAY):
        decoded = CodedReason.decode(kind, frame.stream_id, frame.payload)
    else:
        decoded = DECODERS[kind](frame.payload)
    assert decoded == expected, (value, wire)


# --- the handshake -------------------------------------------------------------

TOKEN = b"the real token"

handshake_frames = st.lists(
    st.builds(
        Frame,
        st.sampled_from(list(FrameType)),
        st.integers(0, 3),
        message_payloads,
    ),
    max_size=5,
)


def _check_replies(replies: list[bytes]) -> None:
    for wire in replies:
        decoder = FrameDecoder(HANDSHAKE_MAX_PAYLOAD)
        decoder.feed(wire)
        frames = decoder.frames()
        assert len(frames) == 1 and decoder.buffered == 0, "a reply is not exactly one frame"


def check_handshake(frames: list[Frame], sc_token: bytes | None, sp_token: bytes | None) -> None:
    """Drive each side with frames from a peer that does not know ``TOKEN``."""
    sc = ConsumerHandshake(sc_token)
    sp = ProviderHandshake(sp_token, "fuzz")
    _check_replies([sp.start()])
    for side in (sc, sp):
        for frame in frames:
            if side.done:
                break  # a pipe hands no more frames to a finished handshake
            try:
                replies = side.receive(frame)
            except RemoteProtocolError:
                # The peer's garbage is refused as the peer's fault (a
                # LocalProtocolError here would be our own bug: it propagates).
                assert not side.done
                break
            _check_replies(replies)
    # Without the token nobody can forge a proof (HMAC-SHA256 over fresh nonces).
    if sc_token == TOKEN:
        assert not sc.done, "the SC authenticated a peer that does not know the token"
    if sp_token == TOKEN:
        assert not sp.done, "the SP accepted an SC that does not know the token"


tokens = st.sampled_from([None, TOKEN])
