"""Services for the tunnel to reach, run in threads of the test process.

``HashService`` speaks a tiny line protocol so every transfer can be checked
end to end by SHA-256:

- ``UP\\n`` + data + EOF   -> the SHA-256 (hex) of the data, then close
- ``DOWN n seed\\n``        -> n deterministic bytes from ``payload(n, seed)``, then close
- ``ECHO\\n`` + data        -> the data back as it arrives; after EOF, "BYE\\n" (half-close)
- ``HOLD\\n``               -> nothing; keeps the connection open until the client closes
"""

from __future__ import annotations

import contextlib
import hashlib
import random
import socket
import socketserver
import threading


def payload(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server = self.server
        assert isinstance(server, _Server)
        with server.lock:
            server.open += 1
        try:
            # The tunnel cut this connection (a test's doing): not worth a traceback.
            with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                self._serve()
        finally:
            with server.lock:
                server.open -= 1

    def _serve(self) -> None:
        sock: socket.socket = self.request
        server = self.server
        assert isinstance(server, _Server)
        with server.lock:
            server.accepted += 1
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                return
            line += chunk
        words = line.decode().split()
        command = words[0] if words else ""
        if command == "UP":
            digest = hashlib.sha256()
            while chunk := sock.recv(65536):
                digest.update(chunk)
            sock.sendall(digest.hexdigest().encode() + b"\n")
        elif command == "DOWN":
            data = payload(int(words[1]), int(words[2]))
            view = memoryview(data)
            for start in range(0, len(data), 1 << 20):
                sock.sendall(view[start : start + (1 << 20)])
        elif command == "ECHO":
            while chunk := sock.recv(65536):
                sock.sendall(chunk)
            sock.sendall(b"BYE\n")
        elif command == "HOLD":
            while sock.recv(65536):
                pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512

    def __init__(self, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.lock = threading.Lock()
        self.accepted = 0
        self.open = 0


class HashService:
    def __init__(self, port: int = 0) -> None:
        self._server = _Server(port)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def accepted(self) -> int:
        return self._server.accepted

    @property
    def open(self) -> int:
        """Connections being served now: one a tunnel left open stays counted."""
        return self._server.open

    def __enter__(self) -> HashService:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    """Run a HashService in the foreground: ``python -m tests.integration.backends [PORT]``.

    Prints the port on the first line (for tests that run it in a namespace, or
    kill and restart it on the same port). Runs until stdin closes.
    """
    import sys
    import time

    with HashService(int(sys.argv[1]) if len(sys.argv) > 1 else 0) as service:
        print(service.port, flush=True)
        try:
            while sys.stdin.read(1):
                time.sleep(0.1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
