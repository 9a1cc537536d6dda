"""How big the SP's QUIC datagrams may grow: the route's MTU, within bounds."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edgerq.carriers.quic import carrier as quic


def test_loopback_allows_datagrams_larger_than_ethernet() -> None:
    size = quic.route_datagram_size(socket.AF_INET, ("127.0.0.1", 4433))
    assert size is not None
    assert 1472 < size <= quic.MAX_DATAGRAM


def test_an_unknown_route_means_qh3s_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_route(*args: object) -> None:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", no_route)
    assert quic.route_datagram_size(socket.AF_INET, ("192.0.2.1", 4433)) is None
    size = asyncio.run(quic._datagram_size("127.0.0.1", 4433))
    assert size == quic.DEFAULT_DATAGRAM == 1280


@pytest.mark.parametrize(
    ("mtu", "expected"), [(1500, 1472), (1400, 1372), (65536, None), (576, 1280)]
)
def test_the_size_follows_the_first_hops_mtu_within_bounds(
    monkeypatch: pytest.MonkeyPatch, mtu: int, expected: int | None
) -> None:
    monkeypatch.setattr(socket.socket, "connect", lambda *args: None)
    monkeypatch.setattr(socket.socket, "getsockopt", lambda *args: mtu)
    size = asyncio.run(quic._datagram_size("127.0.0.1", 4433))
    assert size == (quic.MAX_DATAGRAM if expected is None else expected)
