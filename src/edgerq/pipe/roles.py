"""The frames only one side of a pipe may receive (sans I/O).

At the SC, ``ConsumerFrames``: the SP's REGISTER, and its answers to OPEN
(OPEN_OK, OPEN_FAIL). At the SP, ``ProviderFrames``: the SC's OPEN (checked,
and refused beyond ``streams_per_pipe``) and REGISTERED. Anything else from
that peer is a protocol error. ``PipeConnection`` hands each such frame to the
one of its role.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from edgerq.errors import RemoteProtocolError
from edgerq.pipe.bounds import PipeBounds
from edgerq.pipe.events import OpenRequested, PipeEvent, RegisteredReceived, RegisterReceived
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.pipe.streams import StreamTable
from edgerq.protocol.frames import MAX_PAYLOAD, Frame, FrameType
from edgerq.protocol.messages import (
    CodedReason,
    Open,
    OpenFailure,
    Register,
    Registered,
    decode_open_ok,
)

log = logging.getLogger("edgerq.pipe")


class RoleFrames(Protocol):
    registered: bool
    """REGISTER received (SC) or REGISTERED received (SP)."""

    def handle(self, frame: Frame) -> None: ...


class Acceptor(Protocol):
    """What ``ProviderFrames`` needs of its pipe to refuse an OPEN."""

    def accept_stream(self, request: Open) -> Stream: ...
    def answer_open(self, stream: Stream, failure: OpenRefused | None) -> None: ...


class ConsumerFrames:
    """At the SC: what only an SP sends."""

    def __init__(self, table: StreamTable, emit: Callable[[PipeEvent], None]) -> None:
        self.table = table
        self.emit = emit
        self.registered = False

    def handle(self, frame: Frame) -> None:
        if frame.type is FrameType.OPEN_OK:
            granted = decode_open_ok(frame.payload)  # None from an SP older than grants
            self.table.open_result(frame.stream_id, None, granted)
        elif frame.type is FrameType.OPEN_FAIL:
            failure = CodedReason.decode(frame.type, frame.stream_id, frame.payload)
            self.table.open_result(frame.stream_id, OpenRefused(failure.code, failure.reason))
        elif frame.type is FrameType.REGISTER:
            if self.registered:
                raise RemoteProtocolError("second REGISTER on one pipe")
            register = Register.decode(frame.payload)
            self.registered = True
            self.emit(RegisterReceived(tuple(register.uuids)))
        else:
            raise RemoteProtocolError(f"unexpected {frame.type.name} from the SP")


class ProviderFrames:
    """At the SP: what only an SC sends."""

    def __init__(
        self,
        pipe: Acceptor,
        table: StreamTable,
        bounds: PipeBounds,
        emit: Callable[[PipeEvent], None],
    ) -> None:
        self.pipe = pipe
        self.table = table
        self.bounds = bounds
        self.emit = emit
        self.registered = False

    def handle(self, frame: Frame) -> None:
        if frame.type is FrameType.OPEN:
            request = Open.decode(frame.stream_id, frame.payload)
            if request.stream_id == 0 or request.stream_id in self.table.streams:
                raise RemoteProtocolError(f"OPEN reuses stream id {request.stream_id}")
            if request.max_frame > MAX_PAYLOAD:
                raise RemoteProtocolError(f"OPEN asks for frames of {request.max_frame} bytes")
            refused = self.bounds.stream_refused(len(self.table))
            if refused is None:
                self.emit(OpenRequested(request))
            else:
                self._refuse(request, refused)
        elif frame.type is FrameType.REGISTERED:
            # A second REGISTERED is an update: the SC's config was reloaded.
            results = Registered.decode(frame.payload).results  # a malformed one raises first
            self.registered = True
            self.emit(RegisteredReceived(results))
        else:
            raise RemoteProtocolError(f"unexpected {frame.type.name} from the SC")

    def _refuse(self, request: Open, reason: str) -> None:
        """OPEN beyond ``streams_per_pipe``: refuse that stream (the SC answers its client)."""
        if self.bounds.streams_refused == 1:
            log.warning(
                "%s: %s: refusing new streams (only counted from now on)", self.pipe, reason
            )
        stream = self.pipe.accept_stream(request)
        self.pipe.answer_open(stream, OpenRefused(OpenFailure.CONNECT_ERROR, reason))
