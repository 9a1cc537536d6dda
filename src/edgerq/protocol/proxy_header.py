"""PROXY protocol headers (HAProxy's spec, versions 1 and 2), with no I/O.

The SP writes one header to a service that asked for it, before the first
tunneled byte, so the service learns the real client's address instead of
the SP's. The SC sends the addresses in the OPEN message as ``host:port``
text (``peername`` and ``sockname`` of the client's socket); ``header()``
turns that text into the header bytes.

Only TCP over IPv4/IPv6 is encoded. When the client's address cannot be
parsed the header says so (v1 ``PROXY UNKNOWN``, v2 command LOCAL): the
service then uses the connection's own addresses, as the spec requires.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_PROXY = 0x21
"""Version 2, command PROXY."""
V2_LOCAL = 0x20
"""Version 2, command LOCAL (no addresses)."""
V2_TCP4 = 0x11
V2_TCP6 = 0x21
V2_UNSPEC = 0x00
V1_MAX_LENGTH = 107
"""The longest v1 line the spec allows, CRLF included."""

VERSIONS = (1, 2)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One end of a TCP connection."""

    ip: IPAddress
    port: int


def parse_endpoint(text: str) -> Endpoint:
    """``host:port`` (IPv6 without brackets, as the SC writes it; ``[v6]:port`` too).

    An IPv6 zone (``%eth0``) is dropped: the header cannot carry it.
    Raises ``ValueError`` naming what is wrong.
    """
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not host:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port_text.isdecimal() or not port_text.isascii():
        raise ValueError(f"{text!r} has no numeric port")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"{text!r} has a port above 65535")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} does not start with an IP address") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        ip = ipaddress.IPv6Address(int(ip))
    return Endpoint(ip, port)


def _as_v6(ip: IPAddress) -> ipaddress.IPv6Address:
    if isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ipaddress.IPv6Address((0xFFFF << 32) | int(ip))  # ::ffff:a.b.c.d


def _same_family(source: Endpoint, destination: Endpoint) -> tuple[Endpoint, Endpoint]:
    """Both IPv4 if they can be (IPv4-mapped IPv6 is unmapped), otherwise both IPv6."""
    src, dst = source.ip, destination.ip
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(dst, ipaddress.IPv6Address) and dst.ipv4_mapped is not None:
        dst = dst.ipv4_mapped
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return Endpoint(src, source.port), Endpoint(dst, destination.port)
    return Endpoint(_as_v6(src), source.port), Endpoint(_as_v6(dst), destination.port)


def _check_version(version: int) -> None:
    if version not in VERSIONS:
        raise ValueError(f"PROXY protocol version {version} does not exist (1 or 2)")


def encode(version: int, source: Endpoint, destination: Endpoint) -> bytes:
    """The header announcing a TCP connection from ``source`` to ``destination``."""
    _check_version(version)
    src, dst = _same_family(source, destination)
    v4 = isinstance(src.ip, ipaddress.IPv4Address)
    if version == 1:
        line = f"PROXY {'TCP4' if v4 else 'TCP6'} {src.ip} {dst.ip} {src.port} {dst.port}\r\n"
        return line.encode("ascii")
    addresses = src.ip.packed + dst.ip.packed + struct.pack(">HH", src.port, dst.port)
    family = V2_TCP4 if v4 else V2_TCP6
    return V2_SIGNATURE + struct.pack(">BBH", V2_PROXY, family, len(addresses)) + addresses


def encode_unknown(version: int) -> bytes:
    """The header for a connection whose addresses are unknown (the service uses its own)."""
    _check_version(version)
    if version == 1:
        return b"PROXY UNKNOWN\r\n"
    return V2_SIGNATURE + struct.pack(">BBH", V2_LOCAL, V2_UNSPEC, 0)


def header(version: int, client: str, destination: str) -> tuple[bytes, str | None]:
    """The header for a client at ``client`` that connected to ``destination``.

    Returns the header and, when an address could not be used, why (for a
    log line). A missing or unusable destination (an older SC does not send
    it) becomes the unspecified address of the client's family, port 0; an
    unusable client address gives the UNKNOWN/LOCAL header.
    """
    try:
        source = parse_endpoint(client)
    except ValueError as exc:
        sent = "PROXY UNKNOWN" if version == 1 else "a LOCAL header"
        return encode_unknown(version), f"unusable client address: {exc}; sent {sent}"
    problem = None
    try:
        target = parse_endpoint(destination)
    except ValueError as exc:
        ip = source.ip
        v4 = isinstance(ip, ipaddress.IPv4Address) or ip.ipv4_mapped is not None
        unspecified: IPAddress = ipaddress.IPv4Address(0) if v4 else ipaddress.IPv6Address(0)
        target = Endpoint(unspecified, 0)
        if destination:
            problem = f"unusable destination address: {exc}; sent {unspecified} port 0"
    return encode(version, source, target), problem
