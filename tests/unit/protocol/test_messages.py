"""Control-frame payloads: every message round-trips, garbage is a FrameError."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from edgerq.errors import FrameError
from edgerq.protocol.frames import Frame, FrameDecoder, FrameType
from edgerq.protocol.messages import (
    MAC_SIZE,
    NONCE_SIZE,
    Challenge,
    CodedReason,
    GoawayCode,
    Hello,
    Open,
    OpenFailure,
    Proof,
    Register,
    Registered,
    RegisterStatus,
    ResetCode,
    decode_ping,
    decode_window,
    encode_ping,
    encode_window,
)

FUZZ = settings(max_examples=100, deadline=None)

# Texts longer than their field once encoded, with multi-byte characters that a
# byte cut may split, as well as any text at all.
long_texts = st.one_of(
    st.text(max_size=300),
    st.builds(
        lambda prefix, body: prefix + body,
        st.text(alphabet="ab", max_size=3),
        st.text(alphabet="é€😀", min_size=60, max_size=300),
    ),
)

U1 = uuid.UUID("11111111-2222-3333-4444-555555555555")
U2 = uuid.UUID("5f0c1b8e-3d6a-4c1e-9a57-2b8e4f6d7a10")


def one_frame(wire: bytes) -> Frame:
    """Decode exactly one whole frame from ``wire``."""
    decoder = FrameDecoder(max_payload=2**20)
    decoder.feed(wire)
    frames = decoder.frames()
    assert len(frames) == 1
    assert decoder.buffered == 0
    return frames[0]


# --- round trips ------------------------------------------------------------


def test_hello_round_trips() -> None:
    hello = Hello(1, 3, b"n" * NONCE_SIZE, "pipe-1 ünïcode")
    frame = one_frame(hello.encode())
    assert (frame.type, frame.stream_id) == (FrameType.HELLO, 0)
    assert Hello.decode(frame.payload) == hello


def test_challenge_round_trips() -> None:
    for auth_required in (True, False):
        challenge = Challenge(1, auth_required, bytes(range(NONCE_SIZE)))
        frame = one_frame(challenge.encode())
        assert frame.type is FrameType.CHALLENGE
        assert Challenge.decode(frame.payload) == challenge


@pytest.mark.parametrize("frame_type", [FrameType.AUTH, FrameType.AUTH_OK])
@pytest.mark.parametrize("mac", [b"", b"m" * MAC_SIZE], ids=["no-token", "hmac"])
def test_proof_round_trips(frame_type: FrameType, mac: bytes) -> None:
    frame = one_frame(Proof(frame_type, mac).encode())
    assert frame.type is frame_type
    assert Proof.decode(frame_type, frame.payload) == Proof(frame_type, mac)


@pytest.mark.parametrize("uuids", [(), (U1,), (U1, U2)])
def test_register_round_trips(uuids: tuple[uuid.UUID, ...]) -> None:
    frame = one_frame(Register(uuids).encode())
    assert frame.type is FrameType.REGISTER
    assert Register.decode(frame.payload) == Register(uuids)


def test_registered_round_trips() -> None:
    answer = Registered(((U1, RegisterStatus.ACCEPTED), (U2, RegisterStatus.UNKNOWN_SERVICE)))
    frame = one_frame(answer.encode())
    assert frame.type is FrameType.REGISTERED
    decoded = Registered.decode(frame.payload)
    assert decoded == answer
    assert all(isinstance(status, RegisterStatus) for _, status in decoded.results)


@pytest.mark.parametrize(
    ("client", "destination"),
    [
        ("203.0.113.9:51000", ""),
        ("203.0.113.9:51000", "198.51.100.1:443"),
        ("2001:db8::9:51000", "2001:db8::1:443"),
    ],
)
def test_open_round_trips(client: str, destination: str) -> None:
    message = Open(7, U1, 1024 * 1024, 4096, client, destination)
    frame = one_frame(message.encode())
    assert (frame.type, frame.stream_id) == (FrameType.OPEN, 7)
    assert Open.decode(frame.stream_id, frame.payload) == message


@pytest.mark.parametrize(
    ("frame_type", "stream_id", "code"),
    [
        (FrameType.OPEN_FAIL, 3, OpenFailure.CONNECT_REFUSED),
        (FrameType.RESET, 4, ResetCode.FLOW_CONTROL),
        (FrameType.GOAWAY, 0, GoawayCode.AUTH_FAILED),
        (FrameType.GOAWAY, 0, GoawayCode.SHUTDOWN),
    ],
)
def test_coded_reasons_round_trip(frame_type: FrameType, stream_id: int, code: int) -> None:
    message = CodedReason(frame_type, stream_id, code, "because: ✓")
    frame = one_frame(message.encode())
    assert (frame.type, frame.stream_id) == (frame_type, stream_id)
    assert CodedReason.decode(frame_type, stream_id, frame.payload) == message


@pytest.mark.parametrize("increment", [1, 65536, 2**32 - 1])
def test_window_round_trips(increment: int) -> None:
    frame = one_frame(encode_window(9, increment))
    assert (frame.type, frame.stream_id) == (FrameType.WINDOW, 9)
    assert decode_window(frame.payload) == increment


@pytest.mark.parametrize("frame_type", [FrameType.PING, FrameType.PONG])
def test_ping_pong_round_trip(frame_type: FrameType) -> None:
    frame = one_frame(encode_ping(frame_type, 2**64 - 1))
    assert frame.type is frame_type
    assert decode_ping(frame.payload) == 2**64 - 1


# Long texts are cut to fit their field; what is sent must still decode.


@FUZZ
@given(name=long_texts)
@example(name="a" + "é" * 200)
def test_hello_with_any_name_decodes(name: str) -> None:
    decoded = Hello.decode(one_frame(Hello(1, 1, b"\0" * NONCE_SIZE, name).encode()).payload)
    assert name.startswith(decoded.name)
    assert len(decoded.name.encode()) <= 255


@FUZZ
@given(reason=long_texts)
@example(reason="a" + "é" * 300)
def test_coded_reason_with_any_text_decodes(reason: str) -> None:
    wire = CodedReason(FrameType.GOAWAY, 0, GoawayCode.NORMAL, reason).encode()
    decoded = CodedReason.decode(FrameType.GOAWAY, 0, one_frame(wire).payload)
    assert reason.startswith(decoded.reason)
    assert len(decoded.reason.encode()) <= 512


@FUZZ
@given(client=long_texts.map(lambda text: text.replace(" ", "_")))
@example(client="a" + "é" * 200)
def test_open_with_any_client_text_decodes(client: str) -> None:
    wire = Open(1, U1, 65536, 4096, client).encode()
    decoded = Open.decode(1, one_frame(wire).payload)
    assert client.startswith(decoded.client)
    assert decoded.destination == ""


def host_port(ip: object, port: int) -> str:
    return f"{ip}:{port}"  # how the SC writes a socket address


socket_addresses = st.builds(
    host_port, st.ip_addresses(), st.integers(min_value=0, max_value=65535)
)


@FUZZ
@given(client=socket_addresses, destination=socket_addresses)
def test_open_with_client_and_destination_round_trips(client: str, destination: str) -> None:
    message = Open(3, U2, 65536, 4096, client, destination)
    decoded = Open.decode(3, one_frame(message.encode()).payload)
    assert decoded == message


@FUZZ
@given(client=socket_addresses, destination=socket_addresses)
def test_open_with_destination_reads_as_one_text_to_an_older_sp(
    client: str, destination: str
) -> None:
    """An older SP took the whole text after the fixed part as the client: still UTF-8."""
    payload = one_frame(Open(3, U2, 65536, 4096, client, destination).encode()).payload
    assert payload[24:].decode("utf-8") == f"{client} {destination}"


def test_open_from_an_older_sc_has_no_destination() -> None:
    fixed = U1.bytes + (65536).to_bytes(4, "big") + (4096).to_bytes(4, "big")
    decoded = Open.decode(5, fixed + b"203.0.113.9:51000")
    assert (decoded.client, decoded.destination) == ("203.0.113.9:51000", "")


@given(client=long_texts, destination=long_texts)
@FUZZ
def test_open_never_sends_a_cut_destination(client: str, destination: str) -> None:
    """When both do not fit in 255 bytes the destination is left out, not cut."""
    client = client.replace(" ", "_")
    decoded = Open.decode(
        1, one_frame(Open(1, U1, 65536, 4096, client, destination).encode()).payload
    )
    assert client.startswith(decoded.client)
    assert decoded.destination in ("", destination)


def test_open_refuses_a_client_with_a_space() -> None:
    with pytest.raises(ValueError, match="space"):
        Open(1, U1, 65536, 4096, "203.0.113.9 51000")


@FUZZ
@given(uuids=st.lists(st.uuids(), max_size=50))
def test_register_any_uuids_round_trip(uuids: list[uuid.UUID]) -> None:
    assert Register.decode(one_frame(Register(tuple(uuids)).encode()).payload).uuids == tuple(uuids)


# --- malformed payloads -------------------------------------------------------

GOOD_HELLO = Hello(1, 1, b"n" * NONCE_SIZE, "p").encode()[9:]


@pytest.mark.parametrize(
    ("decode", "payload"),
    [
        (Hello.decode, b""),
        (Hello.decode, GOOD_HELLO[:20]),
        (Hello.decode, b"HTTP/1" + GOOD_HELLO[6:]),
        (Hello.decode, GOOD_HELLO[:6] + bytes([3, 2]) + GOOD_HELLO[8:]),
        (Hello.decode, GOOD_HELLO + b"\xff\xfe"),
        (Challenge.decode, b""),
        (Challenge.decode, b"\x01\x01" + b"n" * (NONCE_SIZE - 1)),
        (Challenge.decode, b"\x01\x01" + b"n" * (NONCE_SIZE + 1)),
        (lambda p: Proof.decode(FrameType.AUTH, p), b"x" * (MAC_SIZE - 1)),
        (lambda p: Proof.decode(FrameType.AUTH_OK, p), b"x" * (MAC_SIZE + 1)),
        (Register.decode, b""),
        (Register.decode, b"\x00"),
        (Register.decode, b"\x00\x02" + U1.bytes),
        (Register.decode, b"\x00\x01" + U1.bytes + b"!"),
        (Registered.decode, b"\x00\x01" + U1.bytes),
        (Registered.decode, b"\x00\x01" + U1.bytes + b"\x07"),
        (lambda p: Open.decode(1, p), U1.bytes + b"\0\0\0"),
        (lambda p: Open.decode(1, p), U1.bytes + b"\0\0\0\0\0\0\x10\0"),
        (lambda p: Open.decode(1, p), U1.bytes + b"\0\1\0\0\0\0\0\0"),
        (lambda p: Open.decode(1, p), U1.bytes + b"\0\1\0\0\0\0\x10\0\xc3"),
        (lambda p: CodedReason.decode(FrameType.RESET, 1, p), b""),
        (lambda p: CodedReason.decode(FrameType.GOAWAY, 0, p), b"\x01\xff"),
        (decode_window, b"\0\0\0"),
        (decode_window, b"\0\0\0\0"),
        (decode_window, b"\0\0\0\0\1"),
        (decode_ping, b"\0" * 7),
        (decode_ping, b"\0" * 9),
    ],
)
def test_malformed_payloads_raise_frame_error(
    decode: Callable[[bytes], object], payload: bytes
) -> None:
    with pytest.raises(FrameError):
        decode(payload)


DECODERS: dict[str, Callable[[bytes], Any]] = {
    "hello": Hello.decode,
    "challenge": Challenge.decode,
    "auth": lambda p: Proof.decode(FrameType.AUTH, p),
    "auth_ok": lambda p: Proof.decode(FrameType.AUTH_OK, p),
    "register": Register.decode,
    "registered": Registered.decode,
    "open": lambda p: Open.decode(1, p),
    "open_fail": lambda p: CodedReason.decode(FrameType.OPEN_FAIL, 1, p),
    "reset": lambda p: CodedReason.decode(FrameType.RESET, 1, p),
    "goaway": lambda p: CodedReason.decode(FrameType.GOAWAY, 0, p),
    "window": decode_window,
    "ping": decode_ping,
}


@pytest.mark.parametrize("name", sorted(DECODERS))
@FUZZ
@given(payload=st.binary(max_size=80))
def test_arbitrary_payload_decodes_or_raises_frame_error(name: str, payload: bytes) -> None:
    try:
        value = DECODERS[name](payload)
    except FrameError:
        return
    assert value is not None


@FUZZ
@given(data=st.data())
def test_truncated_registrations_raise_frame_error(data: st.DataObject) -> None:
    uuids = data.draw(st.lists(st.uuids(), min_size=1, max_size=5))
    answer = Registered(tuple((u, RegisterStatus.ACCEPTED) for u in uuids)).encode()[9:]
    cut = data.draw(st.integers(min_value=0, max_value=len(answer) - 1))
    with pytest.raises(FrameError):
        Registered.decode(answer[:cut])
