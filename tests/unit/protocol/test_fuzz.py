"""A short fuzzing run of the protocol decoders in ``make test``; the fault suite
(tests/fault/test_fuzz.py) runs the same properties for minutes."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerq.protocol.frames import Frame, FrameType
from tests.unit.protocol.properties import (
    check_decoder,
    check_encoded_message,
    check_handshake,
    check_message,
    handshake_frames,
    limits,
    message_payloads,
    messages,
    tokens,
    wire_bytes,
)

SHORT = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SHORT
@given(
    data=wire_bytes,
    max_payload=limits,
    cuts=st.lists(st.integers(0, 2000), max_size=12),
    modes=st.lists(st.booleans(), max_size=6),
)
def test_decoder_matches_the_reference_however_the_bytes_are_split(
    data: bytes, max_payload: int, cuts: list[int], modes: list[bool]
) -> None:
    check_decoder(data, max_payload, cuts, modes)


@SHORT
@given(frame_type=st.sampled_from(list(FrameType)), payload=message_payloads)
def test_message_decoders_return_a_value_or_raise_frame_error(
    frame_type: FrameType, payload: bytes
) -> None:
    check_message(frame_type, payload)


@SHORT
@given(value=messages)
def test_every_message_sent_is_read_back_as_sent(value: object) -> None:
    check_encoded_message(value)


@SHORT
@given(frames=handshake_frames, sc_token=tokens, sp_token=tokens)
def test_handshake_answers_or_raises_a_protocol_error(
    frames: list[Frame], sc_token: bytes | None, sp_token: bytes | None
) -> None:
    check_handshake(frames, sc_token, sp_token)
