"""PROXY protocol headers: what edgerq writes, read back by an independent parser."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgerq.protocol.proxy_header import (
    V1_MAX_LENGTH,
    V2_SIGNATURE,
    Endpoint,
    encode,
    encode_unknown,
    header,
    parse_endpoint,
)
from tests.proxy_parser import Parsed, parse

FUZZ = settings(max_examples=200, deadline=None)

ports = st.integers(min_value=0, max_value=65535)
v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)
addresses = st.one_of(v4, v6)
versions = st.sampled_from([1, 2])


def parse_whole(data: bytes) -> Parsed:
    """Parse ``data`` as exactly one header: no byte missing, none left over."""
    result = parse(data)
    assert result is not None, f"incomplete header {data!r}"
    parsed, length = result
    assert length == len(data)
    for cut in range(len(data)):  # every proper prefix asks for more bytes
        assert parse(data[:cut]) is None
    return parsed


def expected(
    source: ipaddress.IPv4Address | ipaddress.IPv6Address,
    destination: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> tuple[str, str, str]:
    """(family, source, destination) as the spec reader should see them (inet_ntop's form)."""

    def unmapped(
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
    ) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip

    src, dst = unmapped(source), unmapped(destination)
    if isinstance(src, ipaddress.IPv4Address) and isinstance(dst, ipaddress.IPv4Address):
        return "TCP4", str(src), str(dst)
    as6 = [
        ipaddress.IPv6Address(f"::ffff:{ip}") if isinstance(ip, ipaddress.IPv4Address) else ip
        for ip in (src, dst)
    ]
    ntop = [socket.inet_ntop(socket.AF_INET6, ip.packed) for ip in as6]
    return "TCP6", ntop[0], ntop[1]


@FUZZ
@given(version=versions, src=addresses, dst=addresses, sport=ports, dport=ports)
def test_any_addresses_round_trip(
    version: int,
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    sport: int,
    dport: int,
) -> None:
    data = encode(version, Endpoint(src, sport), Endpoint(dst, dport))
    parsed = parse_whole(data)
    family, want_src, want_dst = expected(src, dst)
    assert parsed == Parsed(version, "PROXY", family, (want_src, sport), (want_dst, dport))
    if version == 1:
        assert len(data) <= V1_MAX_LENGTH
    else:
        assert data.startswith(V2_SIGNATURE)


@FUZZ
@given(version=versions, src=addresses, dst=addresses, sport=ports, dport=ports)
def test_sc_address_text_round_trips(
    version: int,
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    dst: ipaddress.IPv4Address | ipaddress.IPv6Address,
    sport: int,
    dport: int,
) -> None:
    """The text the SC puts in OPEN (``f"{host}:{port}"`` of its socket) gives the header."""
    data, problem = header(version, f"{src}:{sport}", f"{dst}:{dport}")
    assert problem is None
    family, want_src, want_dst = expected(src, dst)
    assert parse_whole(data) == Parsed(
        version, "PROXY", family, (want_src, sport), (want_dst, dport)
    )


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        (1, b"PROXY TCP4 203.0.113.7 198.51.100.1 51234 443\r\n"),
        (
            2,
            V2_SIGNATURE
            + b"\x21\x11\x00\x0c"
            + bytes([203, 0, 113, 7, 198, 51, 100, 1])
            + (51234).to_bytes(2, "big")
            + (443).to_bytes(2, "big"),
        ),
    ],
)
def test_ipv4_header_is_byte_exact(version: int, wire: bytes) -> None:
    data, problem = header(version, "203.0.113.7:51234", "198.51.100.1:443")
    assert problem is None
    assert data == wire


@pytest.mark.parametrize(
    ("version", "wire"),
    [
        (1, b"PROXY TCP6 2001:db8::7 ::1 51234 443\r\n"),
        (
            2,
            V2_SIGNATURE
            + b"\x21\x21\x00\x24"
            + ipaddress.IPv6Address("2001:db8::7").packed
            + ipaddress.IPv6Address("::1").packed
            + (51234).to_bytes(2, "big")
            + (443).to_bytes(2, "big"),
        ),
    ],
)
def test_ipv6_header_is_byte_exact(version: int, wire: bytes) -> None:
    data, problem = header(version, "2001:db8::7:51234", "::1:443")
    assert problem is None
    assert data == wire


def test_longest_v1_line_fits_the_spec_limit() -> None:
    widest = ipaddress.IPv6Address("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
    data = encode(1, Endpoint(widest, 65535), Endpoint(widest, 65535))
    assert len(data) <= V1_MAX_LENGTH


def test_dual_stack_listener_addresses_are_sent_as_ipv4() -> None:
    """An SC listening on :: sees IPv4 clients as ::ffff:a.b.c.d; the service gets IPv4."""
    data, problem = header(1, "::ffff:192.0.2.5:40000", "::ffff:192.0.2.1:8080")
    assert problem is None
    assert data == b"PROXY TCP4 192.0.2.5 192.0.2.1 40000 8080\r\n"


def test_ipv6_zone_is_dropped() -> None:
    data, problem = header(1, "fe80::1%eth0:40000", "fe80::2%eth0:80")
    assert problem is None
    assert data == b"PROXY TCP6 fe80::1 fe80::2 40000 80\r\n"


def test_bracketed_ipv6_is_accepted() -> None:
    assert parse_endpoint("[2001:db8::1]:443") == Endpoint(
        ipaddress.IPv6Address("2001:db8::1"), 443
    )


@pytest.mark.parametrize("version", [1, 2])
def test_without_destination_the_unspecified_address_is_sent(version: int) -> None:
    """An older SC sends the client alone: the header still carries it."""
    for client, family, unspecified in [
        ("192.0.2.5:40000", "TCP4", "0.0.0.0"),
        ("2001:db8::5:40000", "TCP6", "::"),
    ]:
        data, problem = header(version, client, "")
        assert problem is None
        parsed = parse_whole(data)
        assert parsed.family == family
        assert parsed.destination == (unspecified, 0)
        assert parsed.source is not None
        assert f"{parsed.source[0]}:{parsed.source[1]}" == client


@pytest.mark.parametrize("version", [1, 2])
def test_unusable_destination_is_reported_and_replaced(version: int) -> None:
    data, problem = header(version, "192.0.2.5:40000", "nonsense")
    assert problem is not None and "destination" in problem and "nonsense" in problem
    assert parse_whole(data).destination == ("0.0.0.0", 0)


@pytest.mark.parametrize(
    "client",
    [
        "?",
        "",
        "192.0.2.5",
        "192.0.2.5:",
        "192.0.2.5:65536",
        "192.0.2.5:-1",
        "192.0.2.5:\uff18\uff10",  # fullwidth digits: int() would take them
        "example.com:80",
        "192.0.2.500:80",
        ":80",
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_unusable_client_gives_unknown_header(client: str, version: int) -> None:
    data, problem = header(version, client, "192.0.2.1:80")
    assert problem is not None and "client" in problem
    assert data == encode_unknown(version)
    parsed = parse_whole(data)
    assert parsed.command == ("UNKNOWN" if version == 1 else "LOCAL")
    assert parsed.source is None


def test_unknown_headers_are_byte_exact() -> None:
    assert encode_unknown(1) == b"PROXY UNKNOWN\r\n"
    assert encode_unknown(2) == V2_SIGNATURE + b"\x20\x00\x00\x00"


@pytest.mark.parametrize("version", [0, 3])
def test_unknown_version_is_refused(version: int) -> None:
    with pytest.raises(ValueError, match="version"):
        encode_unknown(version)
    with pytest.raises(ValueError, match="version"):
        encode(version, parse_endpoint("192.0.2.5:1"), parse_endpoint("192.0.2.1:2"))


@FUZZ
@given(text=st.text(max_size=60))
def test_any_text_is_an_endpoint_or_a_value_error(text: str) -> None:
    try:
        endpoint = parse_endpoint(text)
    except ValueError as exc:
        assert str(exc)
        return
    assert 0 <= endpoint.port <= 65535
