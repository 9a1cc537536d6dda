"""What a reload's new ``<limits>`` do to a pipe already up (issue 12, finding 6)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edgerq.carriers.adapter import build_pipe
from edgerq.carriers.quic.pipe import QuicPipe
from edgerq.carriers.tcp import TcpPipe
from edgerq.config.model import PipeConfig, PipeLimits
from edgerq.sp.dialer import ProviderPipe

PIPE = PipeConfig(name="p", hostname="127.0.0.1", port=9, services=())


def test_streams_per_pipe_control_backlog_and_pipe_buffer_apply_to_the_pipe_up() -> None:
    async def body() -> None:
        provider = ProviderPipe(PIPE, limits=PipeLimits(streams_per_pipe=5))
        pipe = build_pipe(TcpPipe, provider)
        provider.apply_limits(
            PipeLimits(streams_per_pipe=3, control_backlog=65536, pipe_buffer=2 << 20)
        )
        limits = (
            pipe.status().max_streams,
            pipe.status().control_backlog,
            pipe.status().pipe_buffer,
        )
        assert limits == (3, 65536, 2 << 20)
        provider.apply_limits(PipeLimits(streams_per_pipe=50))  # tcp: a raise applies too
        assert pipe.status().max_streams == 50

    asyncio.run(body())


def test_on_udp_a_raise_waits_for_the_next_dial(caplog: pytest.LogCaptureFixture) -> None:
    """QUIC announced streams_per_pipe (+ headroom) at the handshake: more streams
    than that would wait in QUIC instead of being refused with a reason."""

    async def body() -> None:
        provider = ProviderPipe(PIPE, limits=PipeLimits(streams_per_pipe=5))
        pipe = build_pipe(QuicPipe, provider)
        with caplog.at_level(logging.INFO, "edgerq.sp"):
            provider.apply_limits(PipeLimits(streams_per_pipe=50))
        assert pipe.status().max_streams == 5
        assert "keeps 5 until it is next dialed" in caplog.text
        provider.apply_limits(PipeLimits(streams_per_pipe=2))  # a lowering applies at once
        assert pipe.status().max_streams == 2
        assert (
            build_pipe(QuicPipe, provider).status().max_streams == 2
        )  # the next dial: the new value

    asyncio.run(body())
