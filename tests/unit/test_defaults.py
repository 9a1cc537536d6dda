"""Every default lives in edgerq.defaults; the config model and the pipe read it."""

from __future__ import annotations

import inspect
import uuid

from edgerq import defaults
from edgerq.carriers.adapter import CarrierPipe
from edgerq.carriers.quic import qh3_compat
from edgerq.config.model import ConsumerService, PipeLimits
from edgerq.pipe.connection import PipeConnection


def test_the_config_model_fills_in_the_defaults() -> None:
    limits = PipeLimits()
    assert limits.handshake_timeout == defaults.HANDSHAKE_TIMEOUT
    assert limits.control_backlog == defaults.CONTROL_BACKLOG
    assert limits.streams_per_pipe == defaults.STREAMS_PER_PIPE
    assert limits.auth_failures == defaults.AUTH_FAILURES
    service = ConsumerService(uuid=uuid.UUID(int=1), name="s", port=1)
    assert service.max_connections == defaults.MAX_CONNECTIONS
    assert service.request_ttl == defaults.REQUEST_TTL


def test_a_pipe_built_without_settings_agrees_with_the_config_model() -> None:
    limits = PipeLimits()
    for pipe_class in (PipeConnection, CarrierPipe):
        parameters = inspect.signature(pipe_class).parameters
        assert parameters["handshake_timeout"].default == limits.handshake_timeout
        assert parameters["control_backlog"].default == limits.control_backlog
        assert parameters["max_streams"].default == limits.streams_per_pipe
        assert parameters["heartbeat_timeout"].default == defaults.HEARTBEAT_TIMEOUT


def test_quic_lets_a_pipe_carry_as_many_streams_as_the_pipe_allows() -> None:
    from qh3.quic.configuration import QuicConfiguration

    configuration = QuicConfiguration(is_client=True)
    assert qh3_compat.stream_limit(configuration) >= defaults.STREAMS_PER_PIPE
    qh3_compat.set_stream_limit(configuration, 7)
    assert qh3_compat.stream_limit(configuration) == 7 + qh3_compat.STREAM_HEADROOM
