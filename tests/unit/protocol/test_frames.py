"""The frame codec: round trips, incremental decoding, limits, and fuzzing."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerq.errors import FrameError, LocalProtocolError, RemoteProtocolError
from edgerq.protocol.frames import (
    HANDSHAKE_MAX_PAYLOAD,
    HEADER,
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameType,
    RawFrame,
    encode_frame,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def sample_frames() -> list[Frame]:
    """One frame of every type, with assorted stream ids and payloads."""
    return [
        Frame(ftype, index * 7919 % 2**32, bytes([index]) * (index * 3))
        for index, ftype in enumerate(FrameType)
    ]


def decode_all(data: bytes, max_payload: int = MAX_PAYLOAD) -> tuple[list[Frame], FrameDecoder]:
    decoder = FrameDecoder(max_payload)
    decoder.feed(data)
    return decoder.frames(), decoder


# --- round trips ------------------------------------------------------------


@pytest.mark.parametrize("ftype", list(FrameType), ids=lambda t: t.name)
def test_every_frame_type_round_trips(ftype: FrameType) -> None:
    for stream_id, payload in [(0, b""), (1, b"x"), (2**32 - 1, bytes(range(256)) * 4)]:
        frame = Frame(ftype, stream_id, payload)
        wire = frame.encode()
        assert len(wire) == HEADER_SIZE + len(payload)
        assert wire == encode_frame(ftype, stream_id, payload)
        frames, decoder = decode_all(wire)
        assert frames == [frame]
        assert decoder.buffered == 0


def test_header_layout_is_length_type_stream_big_endian() -> None:
    wire = encode_frame(FrameType.DATA, 0x01020304, b"abc")
    assert wire == b"\x00\x00\x00\x03" + bytes([FrameType.DATA]) + b"\x01\x02\x03\x04abc"


def test_payload_at_the_limit_is_accepted() -> None:
    frame = Frame(FrameType.DATA, 1, b"\xaa" * MAX_PAYLOAD)
    frames, _ = decode_all(frame.encode())
    assert frames == [frame]


def test_encoding_more_than_max_payload_is_refused() -> None:
    with pytest.raises(LocalProtocolError, match="exceeds"):
        encode_frame(FrameType.DATA, 1, b"\0" * (MAX_PAYLOAD + 1))


# --- incremental decoding ---------------------------------------------------


def test_whole_buffer_at_once() -> None:
    frames = sample_frames()
    decoded, decoder = decode_all(b"".join(f.encode() for f in frames))
    assert decoded == frames
    assert decoder.buffered == 0


def test_one_byte_at_a_time() -> None:
    frames = sample_frames()
    wire = b"".join(f.encode() for f in frames)
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoded: list[Frame] = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        decoded.extend(decoder.frames())
    assert decoded == frames
    assert decoder.buffered == 0


def test_nothing_is_returned_before_a_frame_is_complete() -> None:
    wire = Frame(FrameType.PING, 0, b"12345678").encode()
    decoder = FrameDecoder()
    for i in range(len(wire) - 1):
        decoder.feed(wire[i : i + 1])
        assert decoder.frames() == []
        assert decoder.buffered == i + 1
    decoder.feed(wire[-1:])
    assert decoder.frames() == [Frame(FrameType.PING, 0, b"12345678")]


@pytest.mark.parametrize("extra", [1, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 3])
def test_trailing_partial_frame_is_kept_for_later(extra: int) -> None:
    frames = sample_frames()
    following = Frame(FrameType.DATA, 5, b"tail-payload")
    next_wire = following.encode()
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoder.feed(b"".join(f.encode() for f in frames) + next_wire[:extra])
    assert decoder.frames() == frames
    assert decoder.buffered == extra
    decoder.feed(next_wire[extra:])
    assert decoder.frames() == [following]
    assert decoder.buffered == 0


def test_feed_accepts_bytearray_and_memoryview() -> None:
    wire = Frame(FrameType.FIN, 3, b"").encode() + Frame(FrameType.DATA, 3, b"z").encode()
    decoder = FrameDecoder()
    decoder.feed(bytearray(wire[:5]))
    decoder.feed(memoryview(wire)[5:])
    assert decoder.frames() == [Frame(FrameType.FIN, 3, b""), Frame(FrameType.DATA, 3, b"z")]


# --- limits and garbage -----------------------------------------------------


def test_oversize_frame_is_refused_from_its_header_alone() -> None:
    decoder = FrameDecoder(max_payload=MAX_PAYLOAD)
    decoder.feed(HEADER.pack(MAX_PAYLOAD + 1, FrameType.DATA, 1))
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.frames()


def test_handshake_limit_applies_before_authentication() -> None:
    decoder = FrameDecoder()  # a fresh pipe: not authenticated yet
    assert decoder.max_payload == HANDSHAKE_MAX_PAYLOAD
    decoder.feed(encode_frame(FrameType.HELLO, 0, b"h" * HANDSHAKE_MAX_PAYLOAD))
    assert len(decoder.frames()) == 1
    decoder.feed(HEADER.pack(HANDSHAKE_MAX_PAYLOAD + 1, FrameType.HELLO, 0))
    with pytest.raises(FrameError, match=str(HANDSHAKE_MAX_PAYLOAD)):
        decoder.frames()


def test_raising_the_limit_after_authentication() -> None:
    decoder = FrameDecoder()
    decoder.max_payload = MAX_PAYLOAD
    frame = Frame(FrameType.DATA, 1, b"d" * (HANDSHAKE_MAX_PAYLOAD * 4))
    decoder.feed(frame.encode())
    assert decoder.frames() == [frame]


@pytest.mark.parametrize("ftype", [0, 17, 99, 255])
def test_unknown_frame_type_is_refused(ftype: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(0, ftype, 0))
    with pytest.raises(FrameError, match=f"unknown frame type {ftype}"):
        decoder.frames()


def test_frame_error_is_a_remote_protocol_error() -> None:
    assert issubclass(FrameError, RemoteProtocolError)


@pytest.mark.parametrize(
    "garbage",
    [HEADER.pack(0, 200, 0), HEADER.pack(MAX_PAYLOAD + 1, FrameType.DATA, 0)],
    ids=["unknown-type", "oversize"],
)
def test_decoder_stays_broken_after_an_error(garbage: bytes) -> None:
    good = Frame(FrameType.PING, 0, b"\0" * 8).encode()
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoder.feed(good + garbage)
    with pytest.raises(FrameError):
        decoder.frames()
    decoder.feed(good)
    with pytest.raises(FrameError, match="already failed"):
        decoder.frames()
    with pytest.raises(FrameError):
        decoder.frames()


def test_http_request_sent_to_the_pipe_is_refused() -> None:
    decoder = FrameDecoder()
    decoder.feed(b"GET / HTTP/1.1\r\nHost: example\r\n\r\n")
    with pytest.raises(FrameError):
        decoder.frames()


# --- Hypothesis ---------------------------------------------------------------

frame_strategy = st.builds(
    Frame,
    st.sampled_from(list(FrameType)),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.binary(max_size=300),
)


@FUZZ
@given(
    chunks=st.lists(st.binary(max_size=64), max_size=20),
    max_payload=st.sampled_from([0, 16, HANDSHAKE_MAX_PAYLOAD, MAX_PAYLOAD]),
)
def test_arbitrary_bytes_parse_or_raise_frame_error(chunks: list[bytes], max_payload: int) -> None:
    decoder = FrameDecoder(max_payload)
    received: list[Frame] = []
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            received.extend(decoder.frames())
    except FrameError:
        with pytest.raises(FrameError):
            decoder.frames()
        return
    for frame in received:
        assert isinstance(frame.type, FrameType)
        assert len(frame.payload) <= max_payload
    total = sum(len(c) for c in chunks)
    assert sum(HEADER_SIZE + len(f.payload) for f in received) + decoder.buffered == total


@FUZZ
@given(
    frame_type=st.integers(min_value=0, max_value=255),
    length=st.integers(min_value=0, max_value=2**32 - 1),
    stream_id=st.integers(min_value=0, max_value=2**32 - 1),
    body=st.binary(max_size=100),
)
def test_arbitrary_headers_parse_or_raise_frame_error(
    frame_type: int, length: int, stream_id: int, body: bytes
) -> None:
    body = body[:length]
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoder.feed(HEADER.pack(length, frame_type, stream_id) + body)
    try:
        frames = decoder.frames()
    except FrameError:
        assert frame_type not in set(FrameType) or length > MAX_PAYLOAD
        return
    assert frame_type in set(FrameType)
    assert length <= MAX_PAYLOAD
    if length == len(body):
        assert frames == [Frame(FrameType(frame_type), stream_id, body)]
    else:
        assert frames == []


@FUZZ
@given(frames=st.lists(frame_strategy, max_size=12), data=st.data())
def test_valid_frames_split_anywhere_decode_to_the_same_frames(
    frames: list[Frame], data: st.DataObject
) -> None:
    wire = b"".join(f.encode() for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(wire)), max_size=20)))
    decoder = FrameDecoder(MAX_PAYLOAD)
    decoded: list[Frame] = []
    start = 0
    for cut in [*cuts, len(wire)]:
        decoder.feed(wire[start:cut])
        decoded.extend(decoder.frames())
        start = cut
    assert decoded == frames
    assert decoder.buffered == 0


@FUZZ
@given(
    frames=st.lists(frame_strategy, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_receive_returns_the_frames_whatever_the_read_boundaries(
    frames: list[Frame], cuts: list[int]
) -> None:
    # The pipe's fast path slices frames out of each read, delivers a DATA frame
    # split across reads piecewise and stages only the rest: every split must
    # give back the same control frames and the same bytes of each stream, in order.
    wire = b"".join(f.encode() for f in frames)
    bounds = sorted({0, len(wire), *(c for c in cuts if c < len(wire))})
    decoder = FrameDecoder(MAX_PAYLOAD, stream_data=True)
    received: list[Frame] = []
    for start, stop in itertools.pairwise(bounds):
        for ftype, stream_id, payload in decoder.receive(wire[start:stop]):
            received.append(Frame(FrameType(ftype), stream_id, bytes(payload)))
    assert _merged_data(received) == _merged_data(frames)
    assert decoder.buffered == 0


def _merged_data(frames: list[Frame]) -> list[Frame]:
    """Consecutive DATA of one stream as one frame (DATA is a byte stream), none empty."""
    out: list[Frame] = []
    for frame in frames:
        if frame.type is FrameType.DATA:
            if not frame.payload:
                continue
            last = out[-1] if out else None
            if last is not None and (last.type, last.stream_id) == (frame.type, frame.stream_id):
                out[-1] = Frame(FrameType.DATA, frame.stream_id, last.payload + frame.payload)
                continue
        out.append(frame)
    return out


def test_receive_delivers_a_large_data_frame_as_its_bytes_arrive_without_staging() -> None:
    # A 256 KiB DATA frame read in pieces: each read yields its part at once, as
    # a view of that read (no copy), and nothing waits in the decoder.
    payload = bytes(range(256)) * 1024
    ping = encode_frame(FrameType.PING, 0, b"p" * 8)
    wire = encode_frame(FrameType.DATA, 7, payload) + ping
    decoder = FrameDecoder(MAX_PAYLOAD, stream_data=True)
    pieces: list[bytes] = []
    control: list[RawFrame] = []
    for start in range(0, len(wire), 65536):
        for ftype, stream_id, part in decoder.receive(wire[start : start + 65536]):
            if ftype == FrameType.DATA:
                assert stream_id == 7
                assert isinstance(part, memoryview)
                pieces.append(bytes(part))
            else:
                control.append((ftype, stream_id, bytes(part)))
        assert decoder.buffered < HEADER_SIZE + 8
    assert len(pieces) == 5
    assert b"".join(pieces) == payload
    assert control == [(FrameType.PING, 0, b"p" * 8)]


@pytest.mark.parametrize("cut", range(1, 2 * HEADER_SIZE + 8))
def test_receive_rejects_an_oversized_frame_as_soon_as_its_header_is_whole(cut: int) -> None:
    # ``cut`` splits the reads anywhere before the oversized header is whole.
    ping = encode_frame(FrameType.PING, 0, b"p" * 8)
    wire = ping + HEADER.pack(5000, FrameType.DATA, 3)
    decoder = FrameDecoder(4096)
    first = decoder.receive(wire[:cut])
    assert len(first) == (1 if cut >= len(ping) else 0)
    with pytest.raises(FrameError, match="exceeds the limit"):
        decoder.receive(wire[cut:])
