"""PipeSettings: what one pipe is built with; its defaults, its handshake, its token kept out
of every line it prints, and no change once made."""

from __future__ import annotations

import dataclasses

import pytest

from edgerq import defaults
from edgerq.config.model import PipeLimits
from edgerq.pipe.events import Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.frames import Frame, FrameType
from edgerq.protocol.handshake import ConsumerHandshake, HandshakeState, ProviderHandshake
from edgerq.protocol.messages import Hello
from tests.unit.fakes import frames_of


def test_pipe_settings_left_at_their_defaults_agree_with_the_config_model() -> None:
    limits = PipeLimits()
    settings = PipeSettings(Role.CONSUMER)
    assert settings.handshake_timeout == limits.handshake_timeout
    assert settings.control_backlog == limits.control_backlog
    assert settings.max_streams == limits.streams_per_pipe
    assert settings.pipe_buffer == limits.pipe_buffer
    assert settings.heartbeat_timeout == defaults.HEARTBEAT_TIMEOUT
    assert settings.stream_window == defaults.STREAM_WINDOW


def test_pipe_settings_never_print_the_token() -> None:
    settings = PipeSettings(Role.PROVIDER, b"s3cret-token", "pipe1")
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings)
    assert "token MASKED" in str(settings)


# --- the handshake ---------------------------------------------------------------------


def test_the_sc_gets_the_answering_side_of_the_handshake_with_its_token() -> None:
    handshake = PipeSettings(Role.CONSUMER, b"k").handshake()
    assert isinstance(handshake, ConsumerHandshake)
    assert handshake.token == b"k"
    assert handshake.state is HandshakeState.AWAIT_HELLO


def test_the_sp_gets_the_starting_side_of_the_handshake_with_its_token_and_name() -> None:
    handshake = PipeSettings(Role.PROVIDER, b"k", "sp1").handshake()
    assert isinstance(handshake, ProviderHandshake)
    assert (handshake.token, handshake.name) == (b"k", "sp1")
    assert handshake.state is HandshakeState.AWAIT_CHALLENGE
    ((ftype, _, payload),) = frames_of(handshake.start())
    assert ftype is FrameType.HELLO and Hello.decode(payload).name == "sp1"


def test_no_token_makes_a_handshake_without_one() -> None:
    assert PipeSettings(Role.CONSUMER).handshake().token is None
    assert PipeSettings(Role.PROVIDER, name="sp1").handshake().token is None


def test_each_call_makes_a_fresh_handshake_with_its_own_nonce() -> None:
    settings = PipeSettings(Role.PROVIDER, b"k", "sp1")
    first, second = settings.handshake(), settings.handshake()
    assert isinstance(first, ProviderHandshake) and isinstance(second, ProviderHandshake)
    assert first is not second
    nonces = {Hello.decode(frames_of(h.start())[0][2]).nonce for h in (first, second)}
    assert len(nonces) == 2  # a replayed HELLO of one pipe proves nothing on another


def test_handshakes_of_two_settings_with_one_token_complete_and_the_sc_learns_the_name() -> None:
    sc = PipeSettings(Role.CONSUMER, b"k").handshake()
    sp = PipeSettings(Role.PROVIDER, b"k", "sp1").handshake()
    assert isinstance(sc, ConsumerHandshake) and isinstance(sp, ProviderHandshake)
    to_sc = [sp.start()]
    for _ in range(3):  # HELLO -> CHALLENGE -> AUTH -> AUTH_OK
        to_sp = [out for data in to_sc for f in frames_of(data) for out in sc.receive(Frame(*f))]
        to_sc = [out for data in to_sp for f in frames_of(data) for out in sp.receive(Frame(*f))]
    assert sc.done and sp.done
    assert sc.peer_name == "sp1"
    # The settings made before are untouched: the next pipe starts from scratch.
    assert PipeSettings(Role.CONSUMER, b"k").handshake().state is HandshakeState.AWAIT_HELLO


# --- printing ----------------------------------------------------------------------------


def test_str_names_the_role_the_pipe_and_its_bounds_and_masks_the_token() -> None:
    settings = PipeSettings(
        Role.PROVIDER, b"s3cret", "pipe1", max_streams=5, stream_window=4096, pipe_buffer=8192
    )
    assert str(settings) == (
        "provider pipe 'pipe1': token MASKED, max_streams 5, stream_window 4096, pipe_buffer 8192"
    )


def test_str_says_so_when_there_is_no_token() -> None:
    assert str(PipeSettings(Role.CONSUMER)) == (
        f"consumer pipe: no token, max_streams {defaults.STREAMS_PER_PIPE}, "
        f"stream_window {defaults.STREAM_WINDOW}, pipe_buffer {defaults.PIPE_BUFFER}"
    )


def test_repr_leaves_the_token_out_but_shows_the_rest() -> None:
    text = repr(PipeSettings(Role.PROVIDER, b"s3cret", "pipe1", max_streams=5))
    assert "s3cret" not in text and "token" not in text
    assert "name='pipe1'" in text and "max_streams=5" in text and "Role.PROVIDER" in text


# --- frozen ----------------------------------------------------------------------------


def test_settings_cannot_be_changed_once_made() -> None:
    settings = PipeSettings(Role.PROVIDER, b"k", "sp1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.max_streams = 1  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.token = None  # type: ignore[misc]
    assert settings.max_streams == defaults.STREAMS_PER_PIPE and settings.token == b"k"


def test_a_reload_makes_new_settings_and_leaves_the_old_ones_as_they_were() -> None:
    old = PipeSettings(Role.PROVIDER, b"k", "sp1", max_streams=10)
    new = dataclasses.replace(old, max_streams=20)
    assert (old.max_streams, new.max_streams) == (10, 20)
    assert (new.role, new.token, new.name) == (Role.PROVIDER, b"k", "sp1")
