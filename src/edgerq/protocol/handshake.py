"""The pipe handshake as two state machines, one per side, with no I/O.

    SP                                   SC
    HELLO(versions, sp_nonce, name)  ->
                                     <-  CHALLENGE(version, auth_required, sc_nonce)
    AUTH(mac_sp)                     ->
                                     <-  AUTH_OK(mac_sc)          (or GOAWAY)

``mac_sp = HMAC-SHA256(token, "edgerq-sp|" + sc_nonce + sp_nonce)`` and
``mac_sc = HMAC-SHA256(token, "edgerq-sc|" + sp_nonce + sc_nonce)``: each side
proves it knows the token without sending it, and the SP learns that the SC
is genuine too. Proofs are compared in constant time.

Feed frames to ``receive()``; it returns the bytes to send and raises a
``RemoteProtocolError`` subclass when the pipe must be closed. A GOAWAY
received during the handshake is turned into the matching error.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from enum import Enum, auto

from edgerq.errors import AuthError, LocalProtocolError, RemoteProtocolError, VersionError
from edgerq.protocol.frames import Frame, FrameType
from edgerq.protocol.messages import (
    NONCE_SIZE,
    Challenge,
    CodedReason,
    GoawayCode,
    Hello,
    Proof,
)

MIN_VERSION = 1
MAX_VERSION = 1


def make_nonce() -> bytes:
    return os.urandom(NONCE_SIZE)


def sp_proof(token: bytes, sc_nonce: bytes, sp_nonce: bytes) -> bytes:
    return hmac.new(token, b"edgerq-sp|" + sc_nonce + sp_nonce, hashlib.sha256).digest()


def sc_proof(token: bytes, sp_nonce: bytes, sc_nonce: bytes) -> bytes:
    return hmac.new(token, b"edgerq-sc|" + sp_nonce + sc_nonce, hashlib.sha256).digest()


class HandshakeState(Enum):
    """Where one end of the handshake stands (a pipe's life cycle: ``pipe.events.State``)."""

    AWAIT_HELLO = auto()
    AWAIT_CHALLENGE = auto()
    AWAIT_AUTH = auto()
    AWAIT_AUTH_OK = auto()
    DONE = auto()
    FAILED = auto()


def _goaway_error(frame: Frame) -> RemoteProtocolError:
    msg = CodedReason.decode(FrameType.GOAWAY, 0, frame.payload)
    text = f"peer closed the pipe: {msg.reason}"
    if msg.code == GoawayCode.AUTH_FAILED:
        return AuthError(text)
    if msg.code == GoawayCode.VERSION_MISMATCH:
        return VersionError(text)
    return RemoteProtocolError(text)


class _Handshake:
    state: HandshakeState

    def _expect(self, frame: Frame, wanted: FrameType) -> None:
        if frame.type == FrameType.GOAWAY:
            self.state = HandshakeState.FAILED
            raise _goaway_error(frame)
        if frame.type != wanted:
            self.state = HandshakeState.FAILED
            raise RemoteProtocolError(
                f"expected {wanted.name} during the handshake, got {frame.type.name}"
            )

    @property
    def done(self) -> bool:
        return self.state is HandshakeState.DONE


class ConsumerHandshake(_Handshake):
    """The SC's side: answers a HELLO, checks the SP's proof."""

    def __init__(self, token: bytes | None, nonce_factory: Callable[[], bytes] = make_nonce):
        self.token = token
        self.state = HandshakeState.AWAIT_HELLO
        self._nonce = nonce_factory()
        self._peer_nonce = b""
        self.version = 0
        self.peer_name = ""

    def receive(self, frame: Frame) -> list[bytes]:
        try:
            return self._receive(frame)
        except RemoteProtocolError:
            self.state = HandshakeState.FAILED
            raise

    def _receive(self, frame: Frame) -> list[bytes]:
        if self.state is HandshakeState.AWAIT_HELLO:
            self._expect(frame, FrameType.HELLO)
            hello = Hello.decode(frame.payload)
            self.peer_name = hello.name
            version = min(hello.max_version, MAX_VERSION)
            if version < max(hello.min_version, MIN_VERSION):
                raise VersionError(
                    f"SP speaks versions {hello.min_version}..{hello.max_version}, "
                    f"this SC speaks {MIN_VERSION}..{MAX_VERSION}"
                )
            self.version = version
            self._peer_nonce = hello.nonce
            self.state = HandshakeState.AWAIT_AUTH
            return [Challenge(version, self.token is not None, self._nonce).encode()]
        if self.state is HandshakeState.AWAIT_AUTH:
            self._expect(frame, FrameType.AUTH)
            proof = Proof.decode(FrameType.AUTH, frame.payload)
            mac = b""
            if self.token is not None:
                if not proof.mac:
                    raise AuthError("SP sent no token proof; this SC requires a token")
                expected = sp_proof(self.token, self._nonce, self._peer_nonce)
                if not hmac.compare_digest(proof.mac, expected):
                    raise AuthError("SP's token proof is wrong")
                mac = sc_proof(self.token, self._peer_nonce, self._nonce)
            self.state = HandshakeState.DONE
            return [Proof(FrameType.AUTH_OK, mac).encode()]
        raise LocalProtocolError(f"handshake is {self.state.name}; no more frames expected")


class ProviderHandshake(_Handshake):
    """The SP's side: sends HELLO, proves the token, checks the SC's proof."""

    def __init__(
        self, token: bytes | None, name: str, nonce_factory: Callable[[], bytes] = make_nonce
    ):
        self.token = token
        self.name = name
        self.state = HandshakeState.AWAIT_CHALLENGE
        self._nonce = nonce_factory()
        self._peer_nonce = b""
        self.version = 0

    def start(self) -> bytes:
        return Hello(MIN_VERSION, MAX_VERSION, self._nonce, self.name).encode()

    def receive(self, frame: Frame) -> list[bytes]:
        try:
            return self._receive(frame)
        except RemoteProtocolError:
            self.state = HandshakeState.FAILED
            raise

    def _receive(self, frame: Frame) -> list[bytes]:
        if self.state is HandshakeState.AWAIT_CHALLENGE:
            self._expect(frame, FrameType.CHALLENGE)
            challenge = Challenge.decode(frame.payload)
            if not MIN_VERSION <= challenge.version <= MAX_VERSION:
                raise VersionError(
                    f"SC chose version {challenge.version}; this SP speaks "
                    f"{MIN_VERSION}..{MAX_VERSION}"
                )
            if challenge.auth_required and self.token is None:
                raise AuthError("the SC requires a token and none is configured for this pipe")
            self.version = challenge.version
            self._peer_nonce = challenge.nonce
            mac = b"" if self.token is None else sp_proof(self.token, challenge.nonce, self._nonce)
            self.state = HandshakeState.AWAIT_AUTH_OK
            return [Proof(FrameType.AUTH, mac).encode()]
        if self.state is HandshakeState.AWAIT_AUTH_OK:
            self._expect(frame, FrameType.AUTH_OK)
            proof = Proof.decode(FrameType.AUTH_OK, frame.payload)
            if self.token is not None:
                if not proof.mac:
                    raise AuthError(
                        "the SC did not prove it knows the token (no token configured there?)"
                    )
                expected = sc_proof(self.token, self._nonce, self._peer_nonce)
                if not hmac.compare_digest(proof.mac, expected):
                    raise AuthError("the SC's token proof is wrong: it has a different token")
            self.state = HandshakeState.DONE
            return []
        raise LocalProtocolError(f"handshake is {self.state.name}; no more frames expected")
