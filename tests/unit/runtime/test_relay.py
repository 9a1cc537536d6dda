"""What a slow reader can keep alive at the SC or SP: its own bytes, not whole pipe reads.

Payloads arrive as zero-copy views of the pipe read they came in (up to
256 KiB); a view left queued in a socket's write buffer would keep that whole
read alive, so a stalled reader of 4 KiB frames could hold 64 times its window.
"""

from __future__ import annotations

from edgerq.runtime.relay import LocalConnection


class SlowPeerTransport:
    """A transport whose peer reads slowly: ``buffered`` bytes are still unsent."""

    def __init__(self, buffered: int) -> None:
        self.buffered = buffered
        self.queued: list[bytes | memoryview] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | memoryview) -> None:
        self.queued.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered


def test_a_frame_queued_behind_unsent_bytes_is_copied_out_of_its_pipe_read() -> None:
    pipe_read = bytes(range(256)) * 1024
    conn = LocalConnection(4096)
    transport = SlowPeerTransport(buffered=64 * 1024)
    conn.transport = transport  # type: ignore[assignment]
    conn.on_data(memoryview(pipe_read)[9 : 9 + 4096])
    (queued,) = transport.queued
    assert type(queued) is bytes
    assert queued == pipe_read[9 : 9 + 4096]


def test_data_for_a_service_not_yet_connected_is_kept_as_its_own_bytes() -> None:
    pipe_read = bytes(range(256)) * 256
    conn = LocalConnection(4096)
    conn.on_data(memoryview(pipe_read)[100:200])
    conn.on_data(memoryview(pipe_read)[200:300])
    assert all(type(chunk) is bytes for chunk in conn._pending)
    assert b"".join(conn._pending) == pipe_read[100:300]
