"""A hand-driven SP built from the sans-IO protocol, for misbehaving on purpose."""

from __future__ import annotations

import socket
import uuid

from edgerq.protocol.frames import MAX_PAYLOAD, Frame, FrameDecoder, FrameType
from edgerq.protocol.handshake import ProviderHandshake
from edgerq.protocol.messages import Register, Registered


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
