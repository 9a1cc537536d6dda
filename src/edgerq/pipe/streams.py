"""The streams of one pipe: their ids, and the stream frames routed to them (sans I/O).

``PipeConnection`` owns one ``StreamTable``. The table allocates the SC's
stream ids, creates ``Stream``s (whose ``StreamWriter`` is the connection),
routes WINDOW/FIN/RESET/OPEN_OK/OPEN_FAIL to them (DATA, the hot path, is
routed by the connection itself), and counts frames for
streams it no longer has (the peer sent them before it learnt of a close:
they are dropped, never handed to another stream).
"""

from __future__ import annotations

import logging
import uuid as uuid_mod

from edgerq.pipe.budget import PipeBudget
from edgerq.pipe.stream import OpenRefused, Stream, StreamSink, StreamWriter
from edgerq.protocol.messages import Open

log = logging.getLogger("edgerq.pipe")


class StreamTable:
    """Stream id -> ``Stream``, for one pipe."""

    __slots__ = ("_next_id", "_step", "pipe", "streams", "total", "unknown_frames")

    def __init__(self, pipe: object, id_step: int = 1) -> None:
        self.pipe = pipe
        """What the log lines name (the pipe)."""
        self.streams: dict[int, Stream] = {}
        self._next_id = 1
        self._step = id_step
        self.total = 0
        """Streams this pipe has carried."""
        self.unknown_frames = 0
        """Frames for streams this pipe no longer has (or never had)."""

    def __len__(self) -> int:
        return len(self.streams)

    def outgoing(
        self,
        writer: StreamWriter,
        service: uuid_mod.UUID,
        window: int,
        max_frame: int,
        sink: StreamSink,
        budget: PipeBudget | None = None,
    ) -> Stream:
        """SC: a new stream under the next id."""
        stream_id = self._next_id
        self._next_id += self._step
        return self._add(Stream(writer, stream_id, service, window, max_frame, sink, budget))

    def incoming(
        self, writer: StreamWriter, request: Open, window: int, budget: PipeBudget | None = None
    ) -> Stream:
        """SP: the stream an OPEN asked for (the caller checked its id), with the
        receive ``window`` this end granted it."""
        stream = Stream(
            writer, request.stream_id, request.uuid, window, request.max_frame, budget=budget
        )
        return self._add(stream)

    def _add(self, stream: Stream) -> Stream:
        self.streams[stream.id] = stream
        self.total += 1
        return stream

    def forget(self, stream: Stream) -> None:
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]

    def pipe_paused(self, paused: bool) -> None:
        """The carrier cannot take more (or can again): tell every stream's local end."""
        for stream in list(self.streams.values()):
            if stream.sink is not None:
                stream.sink.on_pipe_paused(paused)

    def reset_all(self, reason: str) -> None:
        """The pipe is gone: every stream learns so (an unanswered OPEN may go elsewhere)."""
        for stream in list(self.streams.values()):
            stream.receive_reset(reason, pipe_lost=True)
        self.streams.clear()

    # --- frames for streams ------------------------------------------------------------

    def window(self, stream_id: int, increment: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.receive_window(increment)

    def eof(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            self.unknown(stream_id, "FIN")
        else:
            stream.receive_eof()

    def reset(self, stream_id: int, reason: str) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.receive_reset(reason)

    def open_result(
        self, stream_id: int, failure: OpenRefused | None, granted: int | None = None
    ) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.receive_open_result(failure, granted)

    def unknown(self, stream_id: int, what: str) -> None:
        self.unknown_frames += 1
        log.debug("%s: %s for unknown stream %d dropped", self.pipe, what, stream_id)
