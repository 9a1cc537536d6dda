"""Hand-driven peers built from the sans-IO protocol, for misbehaving on purpose:
``FakeProvider`` (an SP dialing an SC), ``HostileConsumer`` (an SC an SP dials)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid

from edgerq.protocol.frames import MAX_PAYLOAD, Frame, FrameDecoder, FrameType, encode_frame
from edgerq.protocol.handshake import ConsumerHandshake, ProviderHandshake
from edgerq.protocol.messages import CodedReason, Open, Register, Registered, RegisterStatus


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
