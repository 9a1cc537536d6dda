"""A small PROXY protocol reader (HAProxy's spec, v1 and v2), written for the tests.

It shares no code with ``edgerq.protocol.proxy_header``: addresses go through
``socket.inet_pton``/``inet_ntop``, fields are checked as the spec words them.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

SIGNATURE = b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"
V1_LIMIT = 107


class ProxyParseError(ValueError):
    pass


@dataclass(frozen=True)
class Parsed:
    version: int
    command: str
    """``PROXY`` (addresses follow), ``UNKNOWN`` (v1) or ``LOCAL`` (v2)."""
    family: str
    """``TCP4``, ``TCP6`` or ``UNKNOWN``/``UNSPEC``."""
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


def _port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise ProxyParseError(f"bad port {text!r}")
    port = int(text)
    if port > 65535:
        raise ProxyParseError(f"port {port} out of range")
    return port


def _address(family: int, text: str) -> str:
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except OSError as exc:
        raise ProxyParseError(f"bad address {text!r}") from exc


def _parse_v1(data: bytes) -> tuple[Parsed, int] | None:
    end = data.find(b"\r\n", 0, V1_LIMIT)
    if end < 0:
        if len(data) >= V1_LIMIT:
            raise ProxyParseError("v1 line longer than 107 bytes")
        return None
    words = data[:end].decode("ascii").split(" ")
    if words[0] != "PROXY" or len(words) < 2:
        raise ProxyParseError(f"bad v1 line {data[:end]!r}")
    if words[1] == "UNKNOWN":
        return Parsed(1, "UNKNOWN", "UNKNOWN"), end + 2
    if len(words) != 6 or words[1] not in ("TCP4", "TCP6"):
        raise ProxyParseError(f"bad v1 line {data[:end]!r}")
    family = socket.AF_INET if words[1] == "TCP4" else socket.AF_INET6
    source = (_address(family, words[2]), _port(words[4]))
    destination = (_address(family, words[3]), _port(words[5]))
    return Parsed(1, "PROXY", words[1], source, destination), end + 2


def _parse_v2(data: bytes) -> tuple[Parsed, int] | None:
    if len(data) < 16:
        return None
    version_command, family_protocol, length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyParseError(f"v2 version nibble {version_command >> 4}")
    if len(data) < 16 + length:
        return None
    command = {0: "LOCAL", 1: "PROXY"}.get(version_command & 0xF)
    if command is None:
        raise ProxyParseError(f"v2 command {version_command & 0xF}")
    block = data[16 : 16 + length]
    if command == "LOCAL":
        return Parsed(2, "LOCAL", "UNSPEC"), 16 + length
    if family_protocol == 0x11:
        family, size, name = socket.AF_INET, 4, "TCP4"
    elif family_protocol == 0x21:
        family, size, name = socket.AF_INET6, 16, "TCP6"
    else:
        raise ProxyParseError(f"v2 family/protocol {family_protocol:#x} not expected here")
    if length < 2 * size + 4:
        raise ProxyParseError("v2 address block too short")
    src = socket.inet_ntop(family, block[:size])
    dst = socket.inet_ntop(family, block[size : 2 * size])
    sport, dport = struct.unpack_from("!HH", block, 2 * size)
    return Parsed(2, "PROXY", name, (src, sport), (dst, dport)), 16 + length


def parse(data: bytes) -> tuple[Parsed, int] | None:
    """The header at the start of ``data`` and its length; None when more bytes are needed."""
    if len(data) < len(SIGNATURE) and SIGNATURE.startswith(data):
        return None
    if data.startswith(SIGNATURE):
        return _parse_v2(data)
    if len(data) < 6 and b"PROXY ".startswith(data):
        return None
    if data.startswith(b"PROXY "):
        return _parse_v1(data)
    raise ProxyParseError(f"no PROXY header at {data[:16]!r}")


def read_from(sock: socket.socket) -> tuple[Parsed, bytes]:
    """Read a header from ``sock`` byte by byte (never past it); return it and nothing else."""
    data = b""
    while True:
        result = parse(data)
        if result is not None:
            parsed, length = result
            assert length == len(data)
            return parsed, data
        chunk = sock.recv(1)
        if not chunk:
            raise ProxyParseError(f"connection closed after {data!r}")
        data += chunk
