"""The quic adapter refuses what an SC never allows: an SP opening QUIC streams."""

from __future__ import annotations

import asyncio

from edgerq.pipe.interface import Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import FrameType, encode_frame
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import CodedReason, GoawayCode
from tests.unit.fakes import FakeLink, Owner, frames_of, in_loop


@in_loop
async def test_an_sp_opening_quic_streams_at_the_sc_loses_its_pipe() -> None:
    from edgerq.carriers.quic.carrier import QuicPipe
    from edgerq.protocol.frames import Frame

    owner = Owner()
    pipe = QuicPipe(PipeSettings(Role.CONSUMER), owner)
    link = FakeLink()
    pipe.attach(link)  # type: ignore[arg-type]
    pipe.quic_ready(("127.0.0.7", 4242))
    # The real handshake on the control stream, as an SP does it.
    sp = ProviderHandshake(None, "sp")
    pipe.quic_stream_data(0, sp.start(), False)
    await asyncio.sleep(0)
    (challenge,) = frames_of(link.quic.sent.pop(0))
    for out in sp.receive(Frame(challenge[0], 0, challenge[2])):
        pipe.quic_stream_data(0, out, False)
    assert pipe.authenticated
    await asyncio.sleep(0)
    link.quic.sent.clear()
    # Then half a frame on a QUIC stream only the SC may open.
    pipe.quic_stream_data(4, encode_frame(FrameType.DATA, 4, b"x" * 100)[:50], False)
    assert pipe.error is not None and pipe.closing
    assert "the SP opened QUIC stream 4; only the SC opens streams" in str(pipe.error)
    ((ftype, _, payload),) = frames_of(link.quic.sent[0])
    goaway = CodedReason.decode(ftype, 0, payload)
    assert goaway.code == GoawayCode.PROTOCOL_ERROR and "QUIC stream 4" in goaway.reason
    assert link.quic.closed_with is not None and "QUIC stream 4" in link.quic.closed_with
    # The rest of that frame is not decoded: it would be a protocol error of its own.
    pipe.quic_stream_data(4, b"garbage", False)
    assert "QUIC stream 4" in str(pipe.error)
