"""Every default lives in edgerq.defaults; the config model and the pipe read it."""

from __future__ import annotations

import uuid

from edgerq import defaults
from edgerq.carriers.quic import qh3_compat
from edgerq.config.model import ConsumerService, PipeLimits


def test_the_config_model_fills_in_the_defaults() -> None:
    limits = PipeLimits()
    assert limits.handshake_timeout == defaults.HANDSHAKE_TIMEOUT
    assert limits.control_backlog == defaults.CONTROL_BACKLOG
    assert limits.streams_per_pipe == defaults.STREAMS_PER_PIPE
    assert limits.auth_failures == defaults.AUTH_FAILURES
    service = ConsumerService(uuid=uuid.UUID(int=1), name="s", port=1)
    assert service.max_connections == defaults.MAX_CONNECTIONS
    assert service.request_ttl == defaults.REQUEST_TTL


def test_quic_lets_a_pipe_carry_as_many_streams_as_the_pipe_allows() -> None:
    from qh3.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=True)
    assert qh3_compat.stream_limit(configuration) >= defaults.STREAMS_PER_PIPE
    qh3_compat.set_stream_limit(configuration, 7)
    assert qh3_compat.stream_limit(configuration) == 7 + qh3_compat.STREAM_HEADROOM
