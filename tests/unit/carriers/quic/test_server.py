"""The SC's udp pipe port (BatchingServer, QuicListener): every datagram it turns away is
counted by reason and summed up in a few log lines; a connection's datagrams reach it in
batches; a packet for a connection of this SC's key it does not have gets a "gone" notice.

Driven as qh3's transport drives it (``datagram_received`` one at a time,
``datagrams_received`` for a batch), over a transport that records what is sent; and once
over a real UDP socket on loopback."""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import pytest

from edgerq.carriers.quic import carrier as quic
from edgerq.carriers.quic import gone_notice
from edgerq.carriers.quic.drop_report import DropReport
from edgerq.carriers.quic.qh3_compat import Drop
from edgerq.carriers.quic.server import BatchingServer, QuicListener
from edgerq.config.model import ListenerConfig
from edgerq.config.tls import ensure_certificate
from edgerq.pipe.interface import Role
from edgerq.pipe.settings import PipeSettings
from tests.unit.fakes import Owner, in_loop

SOURCE = ("192.0.2.1", 50000)
PORT = 4433
SECRET = gone_notice.tag_secret(b"this SC's private key")


class RecordingTransport(asyncio.DatagramTransport):
    """What the server sends, kept; the socket's name is 127.0.0.1:PORT."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[bytes, Any]] = []
        self.closed = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        self.sent.append((bytes(data), addr))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", PORT)}.get(name, default)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


class Connection:
    """A connection in the server's table: records how its datagrams reach it."""

    def __init__(self) -> None:
        self.batches: list[list[bytes]] = []
        self.singles: list[bytes] = []

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        self.batches.append(list(data))

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.singles.append(data)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def listener(tmp_path_factory: pytest.TempPathFactory) -> ListenerConfig:
    """The SC's udp listener, its certificate made once for the module."""
    folder = tmp_path_factory.mktemp("sc")
    cert, key = folder / "cert.pem", folder / "key.pem"
    ensure_certificate(cert, key)
    return ListenerConfig(port=0, protocol="udp", certificate=cert, private_key=key)


def server_for(
    listener: ListenerConfig, *, retry: bool = False
) -> tuple[BatchingServer, RecordingTransport]:
    """The SC's server as ``listen`` builds it, on a recording transport; call from within
    a running loop. ``retry`` as ``listen`` has it, for tests that send Initials (its
    token key costs qh3 an RSA key: 0.2 s)."""
    owner = Owner(PipeSettings(Role.CONSUMER, b"k"))
    server = BatchingServer(
        configuration=quic.server_configuration(listener),
        create_protocol=functools.partial(quic.PipeProtocol, owner=owner, id_secret=SECRET),
        retry=retry,
        id_secret=SECRET,
    )
    transport = RecordingTransport()
    server.connection_made(transport)
    return server, transport


def quic_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edgerq.quic"]


def add_connection(server: BatchingServer, connection_id: bytes) -> Connection:
    """A connection the server issued ``connection_id`` for (as qh3 records one)."""
    connection = Connection()
    server.protocols[connection_id] = cast(Any, connection)
    return connection


# --- datagrams of the kinds a flood is made of ---------------------------------------------


def long_header(first: int, version: int, token: bytes | None, size: int, dcid: bytes) -> bytes:
    """A long-header packet to ``dcid``; a token field for Initials (``token`` not None)."""
    header = bytes([first]) + struct.pack(">I", version)
    header += bytes([len(dcid)]) + dcid + bytes([8]) + bytes(range(8, 16))
    if token is not None:
        header += bytes([len(token)]) + token  # one-byte varint: tokens under 64 bytes
    rest = size - len(header) - 2
    return header + struct.pack(">H", 0x4000 | rest) + bytes(rest)


def short_header(connection_id: bytes, size: int = 60) -> bytes:
    return bytes([0x40]) + connection_id + bytes(size - 1 - len(connection_id))


CID = bytes(range(1, 9))
UNTAGGED = bytes(range(101, 109))
FLOOD: dict[str, list[bytes]] = {
    Drop.TOO_SHORT: [b"", b"\x40", bytes(28)],
    Drop.BAD_HEADER: [bytes([0x00]) + bytes(range(99))] * 2,  # the fixed bit clear
    Drop.UNSUPPORTED_VERSION: [long_header(0xC0, 0x1A2A3A4A, b"", 1200, CID)],
    Drop.INITIAL_TOO_SMALL: [long_header(0xC0, 1, b"", 300, CID)] * 3,
    Drop.RETRY: [long_header(0xC0, 1, b"", 1200, CID)] * 2,
    Drop.BAD_TOKEN: [long_header(0xC0, 1, bytes(range(40)), 1200, CID)] * 2,
    Drop.UNKNOWN_CONNECTION: [short_header(UNTAGGED), long_header(0xE0, 1, None, 200, CID)],
}


@in_loop
async def test_every_datagram_turned_away_is_counted_by_its_reason(
    listener: ListenerConfig,
) -> None:
    server, _ = server_for(listener, retry=True)
    for datagrams in FLOOD.values():
        for datagram in datagrams:
            server.datagram_received(datagram, SOURCE)
    expected = {reason: len(datagrams) for reason, datagrams in FLOOD.items()}
    assert dict(server.drops.totals) == expected
    assert sorted(expected) == sorted(Drop.ALL)  # each reason seen
    assert dict(QuicListener(server).dropped()) == expected
    assert server.protocols == {}  # nothing kept for any of them
    server.close()


@in_loop
async def test_only_version_negotiation_and_retries_are_answered(listener: ListenerConfig) -> None:
    server, transport = server_for(listener, retry=True)
    for datagrams in FLOOD.values():
        for datagram in datagrams:
            server.datagram_received(datagram, SOURCE)
    answers = [data for data, addr in transport.sent if addr == SOURCE]
    assert len(transport.sent) == len(answers) == 3  # 1 version negotiation + 2 Retries
    negotiation, *retries = answers
    assert negotiation[0] & 0x80 and negotiation[1:5] == b"\x00\x00\x00\x00"  # version 0
    assert all(r[0] & 0xF0 == 0xF0 and r[1:5] == b"\x00\x00\x00\x01" for r in retries)  # Retry
    assert all(len(answer) <= 1200 for answer in answers)  # never more than was received
    server.close()


@in_loop
async def test_the_first_drop_is_logged_at_once_and_the_rest_gathered(
    listener: ListenerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = server_for(listener)
    caplog.set_level(logging.DEBUG, "edgerq.quic")
    server.datagram_received(b"\x40", SOURCE)
    for _ in range(500):
        server.datagram_received(short_header(UNTAGGED), ("198.51.100.2", 1))
    assert [(r.levelno, r.getMessage()) for r in quic_records(caplog)] == [
        (
            logging.WARNING,
            f"udp pipe port {PORT}: dropped 1 datagram(s) in 0.0 s (too_short 1) "
            "from 1 source address(es), e.g. 192.0.2.1",
        )
    ]
    assert server.drops.pending == 500  # for the next line, at most one interval on
    server.close()


@in_loop
async def test_what_was_gathered_is_summed_up_in_one_line_when_the_interval_ends(
    listener: ListenerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = server_for(listener)
    server.drops = DropReport(interval=0.05)
    caplog.set_level(logging.WARNING, "edgerq.quic")
    server.datagram_received(b"\x40", SOURCE)
    for _ in range(300):
        server.datagram_received(short_header(UNTAGGED), ("198.51.100.2", 1))
    await until(lambda: len(quic_records(caplog)) == 2)
    first, summary = (r.getMessage() for r in quic_records(caplog))
    assert "dropped 1 datagram(s)" in first
    assert summary.startswith(f"udp pipe port {PORT}: dropped 300 datagram(s) in ")
    assert summary.endswith("(unknown_connection 300) from 1 source address(es), e.g. 198.51.100.2")
    assert server.drops.pending == 0
    assert dict(server.drops.totals) == {"too_short": 1, "unknown_connection": 300}
    server.close()


@in_loop
async def test_a_pipes_retry_is_no_warning(
    listener: ListenerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = server_for(listener, retry=True)
    caplog.set_level(logging.DEBUG, "edgerq.quic")
    server.datagram_received(long_header(0xC0, 1, b"", 1200, CID), SOURCE)
    assert [(r.levelno, r.getMessage()) for r in quic_records(caplog)] == [
        (
            logging.DEBUG,
            f"udp pipe port {PORT}: dropped 1 datagram(s) in 0.0 s (retry 1) "
            "from 1 source address(es), e.g. 192.0.2.1",
        )
    ]
    server.close()


@in_loop
async def test_ipv4_mapped_sources_are_named_as_ipv4(
    listener: ListenerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, _ = server_for(listener)
    caplog.set_level(logging.WARNING, "edgerq.quic")
    server.datagram_received(b"\x40", ("::ffff:203.0.113.5", 1, 0, 0))
    (record,) = quic_records(caplog)
    assert record.getMessage().endswith("from 1 source address(es), e.g. 203.0.113.5")
    server.close()


# --- the "gone" notice -----------------------------------------------------------------


@in_loop
async def test_a_packet_for_a_connection_of_this_key_gets_a_notice_once_per_interval(
    listener: ListenerConfig, caplog: pytest.LogCaptureFixture
) -> None:
    server, transport = server_for(listener)
    caplog.set_level(logging.INFO, "edgerq.quic")
    ours = gone_notice.tagged_id(SECRET)  # issued by this SC's predecessor: same key
    for _ in range(3):
        server.datagram_received(short_header(ours), SOURCE)
    server.datagram_received(short_header(ours), ("192.0.2.2", 50000))
    assert transport.sent == [
        (gone_notice.MAGIC + ours, SOURCE),
        (gone_notice.MAGIC + ours, ("192.0.2.2", 50000)),
    ]
    assert dict(server.drops.totals) == {"unknown_connection": 4}
    told = [
        r.getMessage() for r in quic_records(caplog) if "telling the SP to redial" in r.getMessage()
    ]
    assert told == [
        "QUIC packets from 192.0.2.1:50000 for a connection this SC does not know "
        "(a pipe to it before a restart?): telling the SP to redial",
        "QUIC packets from 192.0.2.2:50000 for a connection this SC does not know "
        "(a pipe to it before a restart?): telling the SP to redial",
    ]
    server.close()


@in_loop
async def test_packets_for_connections_of_another_key_get_no_answer(
    listener: ListenerConfig,
) -> None:
    server, transport = server_for(listener)
    theirs = gone_notice.tagged_id(gone_notice.tag_secret(b"another SC's key"))
    server.datagram_received(short_header(theirs), SOURCE)
    server.datagram_received(short_header(UNTAGGED), SOURCE)
    too_short = short_header(gone_notice.tagged_id(SECRET), size=28)  # not a QUIC packet
    server.datagram_received(too_short, SOURCE)
    assert transport.sent == []
    assert dict(server.drops.totals) == {"unknown_connection": 2, "too_short": 1}
    server.close()


# --- batches ---------------------------------------------------------------------------------


@in_loop
async def test_consecutive_datagrams_of_one_connection_reach_it_as_one_batch(
    listener: ListenerConfig,
) -> None:
    server, _ = server_for(listener)
    a_id, b_id = bytes(range(1, 9)), bytes(range(11, 19))
    a, b = add_connection(server, a_id), add_connection(server, b_id)
    a1, a2, a3, a4 = (short_header(a_id, 100 + n) for n in range(4))
    b1 = short_header(b_id)
    server.datagrams_received([a1, a2, b1, a3, a4], SOURCE)
    assert a.batches == [[a1, a2], [a3, a4]] and b.batches == [[b1]]
    assert a.singles == b.singles == [] and server.drops.totals == {}


@in_loop
async def test_a_batch_hands_anything_else_to_the_one_datagram_path_in_order(
    listener: ListenerConfig,
) -> None:
    server, _ = server_for(listener)
    a_id = bytes(range(1, 9))
    a = add_connection(server, a_id)
    a1, a2 = short_header(a_id, 100), short_header(a_id, 101)
    handshake = long_header(0xE0, 1, None, 200, a_id)  # a long header for that connection
    server.datagrams_received([a1, b"", short_header(UNTAGGED), a2, handshake], SOURCE)
    assert a.batches == [[a1], [a2]]
    assert a.singles == [handshake]  # through qh3's header parse, to the same connection
    assert dict(server.drops.totals) == {"too_short": 1, "unknown_connection": 1}


@in_loop
async def test_one_datagram_for_a_known_connection_reaches_it(listener: ListenerConfig) -> None:
    server, _ = server_for(listener)
    a_id = bytes(range(1, 9))
    a = add_connection(server, a_id)
    datagram = short_header(a_id)
    server.datagram_received(datagram, SOURCE)
    assert a.singles == [datagram] and a.batches == []
    assert server.drops.totals == {}


# --- on a real socket ----------------------------------------------------------------------


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until ``condition`` holds (a loopback datagram needs the loop to read it)."""
    for _ in range(int(seconds / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not reached within {seconds} s")


@in_loop
async def test_a_listener_on_loopback_counts_what_it_turns_away(listener: ListenerConfig) -> None:
    port = await quic.listen(listener, Owner(PipeSettings(Role.CONSUMER, b"k")))
    try:
        assert port.dropped() == {}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in FLOOD[Drop.TOO_SHORT][1:] + FLOOD[Drop.BAD_HEADER]:
                sender.sendto(datagram, port.address)
            await until(lambda: sum(port.dropped().values()) >= 4)
        assert dict(port.dropped()) == {"too_short": 2, "bad_header": 2}
    finally:
        port.close()
