"""Hand-driven peers built from the sans-IO protocol, for misbehaving on purpose:
``FakeProvider`` (an SP dialing an SC), ``HostileConsumer`` (an SC an SP dials)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from edgerq.carriers.quic import carrier as quic
from edgerq.carriers.quic.pipe import QuicPipe
from edgerq.config.model import ListenerConfig
from edgerq.labels import Limit, Outcome
from edgerq.pipe.interface import MuxPipe, Refusal, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.pipe.stream import OpenRefused, Stream
from edgerq.protocol.frames import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Frame,
    FrameDecoder,
    FrameType,
    encode_frame,
)
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake
from edgerq.protocol.messages import (
    CodedReason,
    Open,
    Register,
    Registered,
    RegisterStatus,
    encode_window,
)


class FakeProvider:
    def __init__(self, port: int, token: bytes | None = None, source: str | None = None) -> None:
        """``source``: the loopback address to connect from (127.x.y.z), to play another host."""
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(source, 0) if source else None
        )
        self.decoder = FrameDecoder(max_payload=MAX_PAYLOAD)
        self.handshake = ProviderHandshake(token, "fake")
        self.pending: list[Frame] = []

    def recv_frame(self) -> Frame:
        while True:
            self.pending.extend(self.decoder.frames())
            if self.pending:
                return self.pending.pop(0)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("SC closed the pipe")
            self.decoder.feed(data)

    def authenticate(self) -> None:
        self.sock.sendall(self.handshake.start())
        while not self.handshake.done:
            for out in self.handshake.receive(self.recv_frame()):
                self.sock.sendall(out)

    def register(self, *uuids: uuid.UUID) -> Registered:
        self.sock.sendall(Register(tuple(uuids)).encode())
        while True:
            frame = self.recv_frame()
            if frame.type is FrameType.REGISTERED:
                return Registered.decode(frame.payload)

    def closed_by_peer(self, timeout: float = 10.0) -> bool:
        """True once the SC has closed the connection (GOAWAY or not)."""
        self.sock.settimeout(timeout)
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.sock.close()


class HostileConsumer:
    """A hand-driven SC that an SP dials: it authenticates and accepts the SP's
    services honestly, then abuses the streams it opens (see ``flood``).

    A thread reads everything the SP sends (so the SP's control frames never back
    up) and records the streams it reset and the GOAWAY that ended the pipe.
    """

    def __init__(self, token: bytes | None = None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(30)
        self.port = int(self.listener.getsockname()[1])
        self.token = token
        self.sock: socket.socket | None = None
        self.decoder = FrameDecoder(max_payload=MAX_PAYLOAD)
        self.reset_streams: set[int] = set()
        self.opened_streams: set[int] = set()
        self.goaway: CodedReason | None = None
        self.closed = threading.Event()
        self._reader: threading.Thread | None = None

    def accept(self) -> list[uuid.UUID]:
        """Take the SP's pipe: handshake, accept every service it registers; its UUIDs."""
        sock, _ = self.listener.accept()
        sock.settimeout(30)
        self.sock = sock
        handshake = ConsumerHandshake(self.token)
        pending: list[Frame] = []

        def next_frame() -> Frame:
            while not pending:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("SP closed the pipe")
                self.decoder.feed(data)
                pending.extend(self.decoder.frames())
            return pending.pop(0)

        while not handshake.done:
            for out in handshake.receive(next_frame()):
                sock.sendall(out)
        while True:
            frame = next_frame()
            if frame.type is FrameType.REGISTER:
                uuids = Register.decode(frame.payload).uuids
                results = tuple((u, RegisterStatus.ACCEPTED) for u in uuids)
                sock.sendall(Registered(results).encode())
                break
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return list(uuids)

    def _read(self) -> None:
        sock = self.sock
        assert sock is not None
        sock.settimeout(None)
        try:
            while data := sock.recv(1 << 20):
                self.decoder.feed(data)
                for frame in self.decoder.frames():
                    if frame.type is FrameType.RESET:
                        self.reset_streams.add(frame.stream_id)
                    elif frame.type is FrameType.OPEN_OK:
                        self.opened_streams.add(frame.stream_id)
                    elif frame.type is FrameType.GOAWAY and self.goaway is None:
                        self.goaway = CodedReason.decode(frame.type, 0, frame.payload)
        except OSError:
            pass
        finally:
            self.closed.set()

    def flood(
        self,
        service: uuid.UUID,
        streams: int,
        per_stream: int,
        total: int,
        deadline: float,
        frame_size: int = 64 * 1024,
    ) -> int:
        """OPEN ``streams`` streams asking for a window of 2^32-1, then send DATA round
        robin as fast as the socket takes it: at most ``per_stream`` bytes each and
        ``total`` in all, until ``deadline`` (monotonic) or the SP ends the pipe.
        Returns the bytes sent."""
        sock = self.sock
        assert sock is not None
        ids = range(1, 2 * streams, 2)
        sock.sendall(
            b"".join(
                Open(i, service, 0xFFFFFFFF, 16384, f"127.0.0.1:{40000 + i}").encode() for i in ids
            )
        )
        chunk = bytes(frame_size)
        sent: dict[int, int] = dict.fromkeys(ids, 0)
        done = 0
        try:
            while done < total and time.monotonic() < deadline and not self.closed.is_set():
                batch = [
                    encode_frame(FrameType.DATA, i, chunk)
                    for i in ids
                    if sent[i] + frame_size <= per_stream and i not in self.reset_streams
                ]
                if not batch:
                    break
                sock.sendall(b"".join(batch))
                for i in ids:
                    if sent[i] + frame_size <= per_stream and i not in self.reset_streams:
                        sent[i] += frame_size
                done += frame_size * len(batch)
        except OSError:
            pass  # the SP ended the pipe
        return done

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
        self.listener.close()


class _NullSink:
    """A stream's local end that only notes that the SP reset the stream."""

    def __init__(self, resets: set[int], stream_id: int) -> None:
        self.answers: list[OpenRefused | None] = []
        self.resets = resets
        self.stream_id = stream_id

    def on_data(self, data: bytes | memoryview) -> None:
        pass

    def on_eof(self) -> None:
        pass

    def on_reset(self, reason: str, outcome: Outcome) -> None:
        self.resets.add(self.stream_id)

    def on_credit(self) -> None:
        pass

    def on_pipe_paused(self, paused: bool) -> None:
        pass

    def on_open_answer(self, stream: Stream, failure: OpenRefused | None) -> None:
        self.answers.append(failure)


class QuicHostileConsumer:
    """``HostileConsumer`` over the udp carrier: edgerq's own QUIC pipe code as the
    SC, in an event loop of its own thread, driven to ignore the windows (it
    writes DATA frames straight to the pipe, past any credit)."""

    def __init__(self, certificate: Path, private_key: Path, token: bytes | None) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.token = token
        self.reset_streams: set[int] = set()
        self.close_reason = ""
        self.closed = threading.Event()
        self.registered = threading.Event()
        self.uuids: list[uuid.UUID] = []
        self.pipe: MuxPipe | None = None
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        listener = ListenerConfig(
            self.port, protocol="udp", certificate=certificate, private_key=private_key
        )
        self.listener = asyncio.run_coroutine_threadsafe(
            quic.listen(listener, self), self.loop
        ).result(30)

    # --- ConsumerOwner (only the first pipe is played with) ---------------------------

    def pipe_settings(self) -> PipeSettings:
        # The attacker does not bound itself: with edgerq's own 4 MiB control backlog
        # it could end its own pipe first when the SP reads slowly (seen once, under
        # load), and the test would not be about the SP at all.
        return PipeSettings(Role.CONSUMER, self.token, control_backlog=1 << 40, pipe_buffer=1 << 40)

    def pipe_limit_hit(self, limit: Limit) -> None:
        pass

    def pipe_admit(self, pipe: MuxPipe) -> Refusal | None:
        return None

    def pipe_created(self, pipe: MuxPipe) -> None:
        if self.pipe is None:
            self.pipe = pipe

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        pass

    def pipe_closed(self, pipe: MuxPipe, reason: str) -> None:
        if pipe is self.pipe:
            self.close_reason = reason
            self.closed.set()

    def pipe_register(
        self, pipe: MuxPipe, uuids: Sequence[uuid.UUID]
    ) -> list[tuple[uuid.UUID, RegisterStatus]]:
        if pipe is self.pipe:
            self.uuids = list(uuids)
            self.registered.set()
        return [(u, RegisterStatus.ACCEPTED) for u in uuids]

    # --- the attack -------------------------------------------------------------------

    def accept(self) -> list[uuid.UUID]:
        if not self.registered.wait(30):
            raise AssertionError("the SP did not register over udp")
        return self.uuids

    def flood(
        self,
        service: uuid.UUID,
        streams: int,
        per_stream: int,
        total: int,
        deadline: float,
        frame_size: int = 64 * 1024,
    ) -> int:
        return asyncio.run_coroutine_threadsafe(
            self._flood(service, streams, per_stream, total, deadline, frame_size), self.loop
        ).result(timeout=max(deadline - time.monotonic(), 0) + 30)

    async def _flood(
        self,
        service: uuid.UUID,
        streams: int,
        per_stream: int,
        total: int,
        deadline: float,
        frame_size: int,
    ) -> int:
        pipe = self.pipe
        assert isinstance(pipe, QuicPipe)
        ids = []
        for _ in range(streams):
            sink = _NullSink(self.reset_streams, 0)
            stream = pipe.open_stream(
                service, window=0xFFFFFFFF, max_frame=16384, client="127.0.0.1:1", sink=sink
            )
            sink.stream_id = stream.id
            ids.append(stream.id)
        chunk = bytes(frame_size)
        sent = dict.fromkeys(ids, 0)
        done = 0
        while done < total and time.monotonic() < deadline and not self.closed.is_set():
            live = [
                i for i in ids if sent[i] + frame_size <= per_stream and i not in self.reset_streams
            ]
            if not live:
                break
            for i in live:
                pipe.send_data(i, chunk, frame_size)  # past any credit: a hostile SC
                sent[i] += frame_size
            done += frame_size * len(live)
            await asyncio.sleep(0.002)  # let qh3 send, and hear the SP's resets
        return done

    def grant_and_freeze(
        self, service: uuid.UUID, streams: int, credit: int, seconds: float
    ) -> None:
        """OPEN ``streams`` streams, grant each ``credit`` bytes at once (WINDOW), let
        data flow for a second, then freeze this SC's event loop for ``seconds``: no
        QUIC acknowledgement or flow-control credit while the SP holds stream credit."""

        async def attack() -> None:
            pipe = self.pipe
            assert pipe is not None
            for _ in range(streams):
                sink = _NullSink(self.reset_streams, 0)
                stream = pipe.open_stream(
                    service, window=credit, max_frame=16384, client="127.0.0.1:1", sink=sink
                )
                sink.stream_id = stream.id
                if hasattr(stream, "budget"):  # this SC takes whatever comes
                    stream.withheld = stream.budget = None
                pipe.send_raw(encode_window(stream.id, credit))
            await asyncio.sleep(1.0)  # data flows at full speed meanwhile
            time.sleep(seconds)  # noqa: ASYNC251 (frozen on purpose)

        asyncio.run_coroutine_threadsafe(attack(), self.loop).result(seconds + 30)

    def incomplete_frames(self, service: uuid.UUID, streams: int, seconds: float) -> None:
        """On each of ``streams`` new streams: OPEN, then a DATA frame announcing 1 MiB
        of which all but the last byte is sent (about 50 MB/s); then wait ``seconds``."""

        async def attack() -> None:
            pipe = self.pipe
            assert isinstance(pipe, QuicPipe)
            body = bytes(MAX_PAYLOAD - 1)
            for _ in range(streams):
                stream = pipe.open_stream(
                    service,
                    window=0xFFFFFFFF,
                    max_frame=16384,
                    client="127.0.0.1:1",
                    sink=_NullSink(self.reset_streams, 0),
                )
                frame = encode_frame(FrameType.DATA, stream.id, bytes(MAX_PAYLOAD))
                pipe.send_raw(frame[:HEADER_SIZE] + body)  # queued after its OPEN
                # Paced (about 50 MB/s), so the SP's socket does not drop datagrams: a
                # loss leaves data out of order in qh3, which is not what is tested here.
                await asyncio.sleep(0.02)
            await asyncio.sleep(seconds)

        asyncio.run_coroutine_threadsafe(attack(), self.loop).result(seconds + 60)

    def close(self) -> None:
        async def shut() -> None:
            self.listener.close()
            await asyncio.sleep(0.2)  # the UDP transport closes on the next iterations

        asyncio.run_coroutine_threadsafe(shut(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
