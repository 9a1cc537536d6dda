"""StreamOutbox (the udp carrier's send queue): frames intact, each QUIC stream's
bytes in order, ``queued`` exact, nothing queued for an ended stream."""

from __future__ import annotations

import hashlib
import random

from edgerq.pipe.outbox import PIECE, ByteOutbox, StreamOutbox
from edgerq.protocol.frames import HEADER_SIZE, MAX_PAYLOAD, FrameDecoder, FrameType, encode_frame

MAX_FRAME = 64 * 1024


Taken = tuple[dict[int, list[bytearray]], set[int]]


def _sent(taken: Taken) -> dict[int, bytes]:
    return {s: b"".join(buffers) for s, buffers in taken[0].items()}


def _empty(taken: Taken) -> bool:
    return taken == ({}, set())


def test_each_stream_gets_the_bytes_a_byte_stream_would_carry_for_it() -> None:
    rng = random.Random(14)
    quic, tcp = StreamOutbox(), ByteOutbox()
    per_stream: dict[int, ByteOutbox] = {1: ByteOutbox(), 5: ByteOutbox(), 0: ByteOutbox()}
    for _ in range(200):
        stream_id = rng.choice([1, 5])
        size = rng.choice([0, 1, 700, MAX_FRAME - 1, MAX_FRAME, MAX_FRAME + 1, 5 * MAX_FRAME // 2])
        payload = rng.randbytes(size)
        for out in (quic, per_stream[stream_id], tcp):
            out.data(stream_id, memoryview(payload), MAX_FRAME)
        if rng.random() < 0.2:
            window = encode_frame(FrameType.WINDOW, stream_id, rng.randbytes(4))
            for out in (quic, per_stream[stream_id], tcp):
                out.frame(window)
    ping = encode_frame(FrameType.PING, 0, b"12345678")
    for out in (quic, per_stream[0], tcp):
        out.frame(ping)

    queued = quic.queued
    taken = quic.take()
    sent = _sent(taken)
    assert queued == sum(len(data) for data in sent.values()) == len(tcp.take())
    assert quic.queued == 0 and _empty(quic.take())
    for stream_id, expected in per_stream.items():
        data = sent[stream_id]
        assert hashlib.sha256(data).digest() == hashlib.sha256(bytes(expected.take())).digest()
        frames = FrameDecoder(MAX_PAYLOAD).receive(data)
        assert {s for _, s, _ in frames} == {stream_id}
    queues, to_end = taken
    assert not to_end
    for buffers in queues.values():
        # Buffers stay small: only a frame that fills one alone makes one larger.
        assert all(len(b) <= PIECE or len(b) <= HEADER_SIZE + MAX_FRAME for b in buffers)


def test_a_payload_whose_buffer_is_reused_at_once_is_sent_as_it_was() -> None:
    # The relay reads every local socket into one shared buffer: the outbox must
    # have copied the bytes before that buffer is read into again.
    shared = bytearray(b"a" * (3 * MAX_FRAME))
    out = StreamOutbox()
    out.data(1, memoryview(shared)[:1000], MAX_FRAME)
    out.data(1, memoryview(shared), MAX_FRAME)
    shared[:] = b"b" * len(shared)
    frames = FrameDecoder(MAX_PAYLOAD).receive(_sent(out.take())[1])
    assert b"".join(bytes(p) for _, _, p in frames) == b"a" * (1000 + 3 * MAX_FRAME)


def test_an_ended_stream_is_ended_once_and_gets_nothing_more() -> None:
    out = StreamOutbox()
    out.data(1, b"last words", MAX_FRAME)
    assert out.end_stream(1) and out.end_stream(5)
    queues, to_end = out.take()
    assert to_end == {1, 5} and 5 not in queues
    assert b"".join(queues[1]).endswith(b"last words")

    assert not out.end_stream(1)
    out.data(1, b"x" * (2 * MAX_FRAME), MAX_FRAME)
    out.frame(encode_frame(FrameType.FIN, 5, b""))
    assert out.queued == 0 and _empty(out.take())


def test_clear_drops_everything_queued() -> None:
    out = StreamOutbox()
    out.data(9, b"y" * 100_000, MAX_FRAME)
    out.end_stream(13)
    assert out.queued == 100_000 + 2 * HEADER_SIZE
    out.clear()
    assert out.queued == 0 and _empty(out.take())
