"""The pipe handshake: a ConsumerHandshake and a ProviderHandshake joined in memory."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest

from edgerq.errors import AuthError, LocalProtocolError, RemoteProtocolError, VersionError
from edgerq.protocol.frames import MAX_PAYLOAD, Frame, FrameDecoder, FrameType
from edgerq.protocol.handshake import (
    MAX_VERSION,
    MIN_VERSION,
    ConsumerHandshake,
    HandshakeState,
    ProviderHandshake,
)
from edgerq.protocol.messages import NONCE_SIZE, Challenge, CodedReason, GoawayCode, Hello, Proof

TOKEN = b"correct horse battery staple"
OTHER = b"a different token entirely"

_counter = itertools.count()


def nonces() -> bytes:
    """Distinct, predictable nonces so runs are reproducible."""
    return next(_counter).to_bytes(NONCE_SIZE, "big")


def goaway(code: GoawayCode, reason: str) -> bytes:
    return CodedReason(FrameType.GOAWAY, 0, code, reason).encode()


def error_to_goaway(exc: RemoteProtocolError) -> bytes:
    """What the pipe does with a handshake error: tell the peer why, then close."""
    if isinstance(exc, AuthError):
        code = GoawayCode.AUTH_FAILED
    elif isinstance(exc, VersionError):
        code = GoawayCode.VERSION_MISMATCH
    else:
        code = GoawayCode.PROTOCOL_ERROR
    return goaway(code, str(exc))


@dataclass
class Wire:
    """One direction of the pipe: records every byte and decodes it into frames."""

    sent: bytearray = field(default_factory=bytearray)
    decoder: FrameDecoder = field(default_factory=FrameDecoder)

    def carry(self, chunks: list[bytes]) -> list[Frame]:
        frames = []
        for chunk in chunks:
            self.sent += chunk
            # Byte by byte: the handshake must not depend on how TCP splits data.
            for i in range(len(chunk)):
                self.decoder.feed(chunk[i : i + 1])
                frames.extend(self.decoder.frames())
        return frames


@dataclass
class Pair:
    sc: ConsumerHandshake
    sp: ProviderHandshake
    to_sc: Wire = field(default_factory=Wire)
    to_sp: Wire = field(default_factory=Wire)

    @property
    def all_bytes(self) -> bytes:
        return bytes(self.to_sc.sent + self.to_sp.sent)

    def run(self) -> tuple[RemoteProtocolError | None, RemoteProtocolError | None]:
        """Drive both sides until done or refused; return (SC error, SP error).

        As the pipe does, an error at the SC is sent to the SP as a GOAWAY.
        """
        sc_error: RemoteProtocolError | None = None
        pending_to_sc = self.to_sc.carry([self.sp.start()])
        try:
            while pending_to_sc:
                frame = pending_to_sc.pop(0)
                try:
                    replies = self.sc.receive(frame)
                except RemoteProtocolError as exc:
                    sc_error = exc
                    replies = [error_to_goaway(exc)]
                for sp_frame in self.to_sp.carry(replies):
                    pending_to_sc += self.to_sc.carry(self.sp.receive(sp_frame))
        except RemoteProtocolError as sp_error:
            return sc_error, sp_error
        return sc_error, None


def pair(sc_token: bytes | None, sp_token: bytes | None) -> Pair:
    return Pair(
        ConsumerHandshake(sc_token, nonce_factory=nonces),
        ProviderHandshake(sp_token, "pipe1", nonce_factory=nonces),
    )


# --- success ------------------------------------------------------------------


def test_same_token_on_both_sides_succeeds() -> None:
    p = pair(TOKEN, TOKEN)
    assert p.run() == (None, None)
    assert p.sc.done and p.sp.done
    assert p.sc.version == p.sp.version == MAX_VERSION
    assert p.sc.peer_name == "pipe1"


def test_no_token_on_either_side_succeeds() -> None:
    p = pair(None, None)
    assert p.run() == (None, None)
    assert p.sc.done and p.sp.done


def test_exchange_is_hello_challenge_auth_auth_ok() -> None:
    p = pair(TOKEN, TOKEN)
    p.run()
    to_sc = FrameDecoder()
    to_sc.feed(bytes(p.to_sc.sent))
    to_sp = FrameDecoder()
    to_sp.feed(bytes(p.to_sp.sent))
    assert [f.type for f in to_sc.frames()] == [FrameType.HELLO, FrameType.AUTH]
    assert [f.type for f in to_sp.frames()] == [FrameType.CHALLENGE, FrameType.AUTH_OK]


@pytest.mark.parametrize(
    ("sc_token", "sp_token"), [(TOKEN, TOKEN), (None, None), (TOKEN, OTHER), (None, TOKEN)]
)
def test_token_never_crosses_the_wire(sc_token: bytes | None, sp_token: bytes | None) -> None:
    p = pair(sc_token, sp_token)
    p.run()
    wire = p.all_bytes
    assert wire
    for token in (TOKEN, OTHER):
        assert token not in wire
        assert token.hex().encode() not in wire


# --- refusals -------------------------------------------------------------------


def test_wrong_token_fails_at_the_sc_and_the_sp_learns_through_goaway() -> None:
    p = pair(TOKEN, OTHER)
    sc_error, sp_error = p.run()
    assert isinstance(sc_error, AuthError)
    assert "proof is wrong" in str(sc_error)
    assert isinstance(sp_error, AuthError)
    assert "peer closed the pipe" in str(sp_error)
    assert p.sc.state is HandshakeState.FAILED
    assert p.sp.state is HandshakeState.FAILED
    assert not p.sc.done and not p.sp.done


def test_sp_raises_auth_error_on_goaway_auth_failed() -> None:
    sp = ProviderHandshake(OTHER, "pipe1", nonce_factory=nonces)
    sp.start()
    (auth,) = sp.receive(Frame(FrameType.CHALLENGE, 0, Challenge(1, True, nonces()).encode()[9:]))
    assert auth[4] == FrameType.AUTH
    frame = Frame(FrameType.GOAWAY, 0, goaway(GoawayCode.AUTH_FAILED, "wrong token")[9:])
    with pytest.raises(AuthError, match="wrong token"):
        sp.receive(frame)
    assert sp.state is HandshakeState.FAILED


def test_sc_requires_a_token_and_the_sp_has_none() -> None:
    p = pair(TOKEN, None)
    sc_error, sp_error = p.run()
    assert sc_error is None
    assert isinstance(sp_error, AuthError)
    assert "requires a token" in str(sp_error)
    assert p.sp.state is HandshakeState.FAILED
    assert not p.sc.done


def test_sp_without_token_that_sends_an_empty_proof_is_refused_by_the_sc() -> None:
    sc = ConsumerHandshake(TOKEN, nonce_factory=nonces)
    sc.receive(Frame(FrameType.HELLO, 0, Hello(1, 1, nonces(), "x").encode()[9:]))
    with pytest.raises(AuthError, match="no token proof"):
        sc.receive(Frame(FrameType.AUTH, 0, b""))
    assert sc.state is HandshakeState.FAILED


def test_sp_with_a_token_refuses_an_sc_without_one() -> None:
    p = pair(None, TOKEN)
    sc_error, sp_error = p.run()
    assert sc_error is None
    assert isinstance(sp_error, AuthError)
    assert "SC did not prove" in str(sp_error)
    assert p.sc.done  # the SC accepted; the SP is the one that refuses
    assert p.sp.state is HandshakeState.FAILED


def test_sp_refuses_an_sc_that_proves_a_different_token() -> None:
    sp = ProviderHandshake(TOKEN, "pipe1", nonce_factory=nonces)
    sc = ConsumerHandshake(OTHER, nonce_factory=nonces)
    (challenge,) = sc.receive(Frame(FrameType.HELLO, 0, sp.start()[9:]))
    sp.receive(Frame(FrameType.CHALLENGE, 0, challenge[9:]))
    # An impostor SC cannot compute the SP's proof; pretend it skipped the check
    # and answered with a MAC of its own token.
    forged = Proof(FrameType.AUTH_OK, b"\x01" * 32).encode()
    with pytest.raises(AuthError, match="different token"):
        sp.receive(Frame(FrameType.AUTH_OK, 0, forged[9:]))


def test_replayed_proof_is_refused_by_a_new_sc() -> None:
    first = pair(TOKEN, TOKEN)
    assert first.run() == (None, None)
    decoder = FrameDecoder()
    decoder.feed(bytes(first.to_sc.sent))
    hello, auth = decoder.frames()
    fresh = ConsumerHandshake(TOKEN, nonce_factory=nonces)
    fresh.receive(hello)
    with pytest.raises(AuthError):
        fresh.receive(auth)


def hello_frame(lo: int, hi: int) -> Frame:
    return Frame(FrameType.HELLO, 0, Hello(lo, hi, nonces(), "future-sp").encode()[9:])


def test_sp_offering_only_newer_versions_is_refused_by_the_sc() -> None:
    sc = ConsumerHandshake(None, nonce_factory=nonces)
    with pytest.raises(VersionError, match=r"5\.\.7"):
        sc.receive(hello_frame(5, 7))
    assert sc.state is HandshakeState.FAILED


def test_sc_choosing_an_unknown_version_is_refused_by_the_sp() -> None:
    sp = ProviderHandshake(None, "pipe1", nonce_factory=nonces)
    sp.start()
    challenge = Challenge(5, False, nonces()).encode()
    with pytest.raises(VersionError, match="version 5"):
        sp.receive(Frame(FrameType.CHALLENGE, 0, challenge[9:]))
    assert sp.state is HandshakeState.FAILED


def test_sp_learns_of_a_version_mismatch_through_goaway() -> None:
    sp = ProviderHandshake(None, "pipe1", nonce_factory=nonces)
    sp.start()
    frame = Frame(FrameType.GOAWAY, 0, goaway(GoawayCode.VERSION_MISMATCH, "too old")[9:])
    with pytest.raises(VersionError, match="too old"):
        sp.receive(frame)


def test_sc_picks_the_highest_common_version() -> None:
    sc = ConsumerHandshake(None, nonce_factory=nonces)
    (challenge,) = sc.receive(hello_frame(MIN_VERSION, MAX_VERSION + 5))
    assert Challenge.decode(challenge[9:]).version == MAX_VERSION
    assert sc.version == MAX_VERSION


# --- frames out of place ------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Frame(FrameType.PING, 0, b"\0" * 8),
        Frame(FrameType.AUTH, 0, b""),
        Frame(FrameType.DATA, 1, b"GET / HTTP/1.1\r\n"),
        Frame(FrameType.REGISTER, 0, b"\0\0"),
    ],
    ids=lambda f: f.type.name,
)
def test_sc_refuses_anything_but_hello_first(frame: Frame) -> None:
    sc = ConsumerHandshake(TOKEN, nonce_factory=nonces)
    with pytest.raises(RemoteProtocolError, match="expected HELLO"):
        sc.receive(frame)
    assert sc.state is HandshakeState.FAILED


def test_sc_refuses_a_second_hello_instead_of_auth() -> None:
    sc = ConsumerHandshake(TOKEN, nonce_factory=nonces)
    sc.receive(hello_frame(1, 1))
    with pytest.raises(RemoteProtocolError, match="expected AUTH"):
        sc.receive(hello_frame(1, 1))
    assert sc.state is HandshakeState.FAILED


@pytest.mark.parametrize(
    "frame",
    [
        Frame(FrameType.AUTH_OK, 0, b""),
        Frame(FrameType.HELLO, 0, b""),
        Frame(FrameType.PONG, 0, b""),
    ],
    ids=lambda f: f.type.name,
)
def test_sp_refuses_anything_but_challenge_first(frame: Frame) -> None:
    sp = ProviderHandshake(None, "pipe1", nonce_factory=nonces)
    sp.start()
    with pytest.raises(RemoteProtocolError, match="expected CHALLENGE"):
        sp.receive(frame)
    assert sp.state is HandshakeState.FAILED


def test_sp_refuses_a_challenge_where_auth_ok_was_due() -> None:
    sp = ProviderHandshake(None, "pipe1", nonce_factory=nonces)
    sp.start()
    challenge = Frame(FrameType.CHALLENGE, 0, Challenge(1, False, nonces()).encode()[9:])
    sp.receive(challenge)
    with pytest.raises(RemoteProtocolError, match="expected AUTH_OK"):
        sp.receive(challenge)


def test_garbage_hello_payload_is_a_remote_error() -> None:
    sc = ConsumerHandshake(None, nonce_factory=nonces)
    with pytest.raises(RemoteProtocolError):
        sc.receive(Frame(FrameType.HELLO, 0, b"SSH-2.0-OpenSSH_9.6\r\n"))
    assert sc.state is HandshakeState.FAILED


def test_goaway_during_handshake_at_the_sc_is_a_remote_error() -> None:
    sc = ConsumerHandshake(None, nonce_factory=nonces)
    frame = Frame(FrameType.GOAWAY, 0, goaway(GoawayCode.SHUTDOWN, "bye")[9:])
    with pytest.raises(RemoteProtocolError, match="bye"):
        sc.receive(frame)


def test_frames_after_the_handshake_are_a_local_error() -> None:
    p = pair(None, None)
    assert p.run() == (None, None)
    with pytest.raises(LocalProtocolError):
        p.sc.receive(hello_frame(1, 1))
    with pytest.raises(LocalProtocolError):
        p.sp.receive(Frame(FrameType.AUTH_OK, 0, b""))


def test_handshake_frames_fit_the_pre_auth_limit() -> None:
    p = Pair(
        ConsumerHandshake(TOKEN, nonce_factory=nonces),
        ProviderHandshake(TOKEN, "p" * 1000, nonce_factory=nonces),
    )
    assert p.run() == (None, None)  # the wires use the pre-auth limit
    assert p.to_sc.decoder.max_payload < MAX_PAYLOAD
    assert p.sc.done
