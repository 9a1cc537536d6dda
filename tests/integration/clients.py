"""Blocking clients of the hash service, used through the tunnel."""

from __future__ import annotations

import hashlib
import socket

TIMEOUT = 60.0


def connect(port: int, timeout: float = TIMEOUT) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def upload(port: int, data: bytes) -> str:
    """Send ``data``, half-close, return the service's SHA-256 of what it got."""
    with connect(port) as sock:
        sock.sendall(b"UP\n")
        view = memoryview(data)
        for start in range(0, len(data), 1 << 20):
            sock.sendall(view[start : start + (1 << 20)])
        sock.shutdown(socket.SHUT_WR)
        return read_all(sock).decode().strip()


def download(port: int, n: int, seed: int = 0) -> str:
    """Ask for ``n`` deterministic bytes; return the SHA-256 of what arrived."""
    with connect(port) as sock:
        sock.sendall(f"DOWN {n} {seed}\n".encode())
        digest = hashlib.sha256()
        while chunk := sock.recv(1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
