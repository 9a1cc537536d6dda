"""The udp carrier runs only on a qh3 release whose internals it was checked against."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import pytest
import qh3
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection
from qh3.quic.events import QuicEvent, StreamDataReceived

from edgerq.carriers import require_usable
from edgerq.carriers.quic import qh3_compat
from edgerq.config.model import ConsumerConfig, ListenerConfig, PipeConfig, ProviderConfig
from edgerq.config.pki import make_key
from edgerq.errors import ConfigError
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider


@pytest.fixture
def unknown_qh3(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(qh3, "__version__", "9.8.7")
    return "9.8.7"


def test_the_pinned_release_is_known() -> None:
    assert qh3.__version__ in qh3_compat.KNOWN_VERSIONS
    qh3_compat.require_known_version()
    require_usable("udp")


def test_an_unknown_release_is_refused_naming_both_versions(unknown_qh3: str) -> None:
    with pytest.raises(qh3_compat.UnsupportedQh3) as refused:
        qh3_compat.require_known_version()
    message = str(refused.value)
    assert f"qh3 {unknown_qh3} is installed" in message
    for known in qh3_compat.KNOWN_VERSIONS:
        assert known in message
    assert isinstance(refused.value, ConfigError)  # the daemons report it and exit 1


def test_the_tcp_carrier_does_not_care(unknown_qh3: str) -> None:
    require_usable("tcp")


def test_the_sc_refuses_to_accept_udp_pipes(unknown_qh3: str, tmp_path: Path) -> None:
    listener = ListenerConfig(
        port=0,
        protocol="udp",
        certificate=tmp_path / "cert.pem",
        private_key=tmp_path / "key.pem",
    )
    sc = ServiceConsumer(ConsumerConfig(path=tmp_path / "consumer.xml", listeners=(listener,)))
    with pytest.raises(qh3_compat.UnsupportedQh3, match=unknown_qh3):
        asyncio.run(sc.start())
    assert not sc.listener_addresses
    assert not (tmp_path / "cert.pem").exists()  # refused before doing anything


def test_the_sp_refuses_to_start_with_a_udp_pipe(unknown_qh3: str, tmp_path: Path) -> None:
    pipe = PipeConfig(name="p", hostname="127.0.0.1", port=9, services=(), protocol="udp")
    sp = ServiceProvider(ProviderConfig(path=tmp_path / "provider.xml", pipes=(pipe,)))
    with pytest.raises(qh3_compat.UnsupportedQh3, match=unknown_qh3):
        asyncio.run(sp.start())
    assert not sp.pipes  # nothing dialed


def streams_the_server_may_open(tmp_path: Path, streams_per_pipe: int | None) -> int:
    """Handshake a qh3 client (the SP) and server (the SC) in memory; count the
    bidirectional streams the server can open before qh3 refuses the next."""
    from qh3.quic.configuration import QuicConfiguration
    from qh3.quic.connection import QuicConnection

    from edgerq.carriers.quic import carrier as quic
    from edgerq.config.tls import ensure_certificate

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    ensure_certificate(cert, key)
    client_configuration = QuicConfiguration(is_client=True, alpn_protocols=[quic.ALPN])
    client_configuration.verify_mode = ssl.CERT_NONE
    if streams_per_pipe is not None:
        qh3_compat.set_stream_limit(client_configuration, streams_per_pipe)
    server_configuration = QuicConfiguration(is_client=False, alpn_protocols=[quic.ALPN])
    server_configuration.load_cert_chain(str(cert), str(key))
    client = QuicConnection(configuration=client_configuration)
    server = QuicConnection(
        configuration=server_configuration,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    address = ("192.0.2.1", 4433)
    client.connect(address, now=0.0)
    for _ in range(10):
        for sender, receiver in ((client, server), (server, client)):
            for datagram, _ in sender.datagrams_to_send(now=0.0):
                receiver.receive_datagram(datagram, address, now=0.0)
    opened = 0
    while opened < 20000:
        try:
            server.send_stream_data(1 + 4 * opened, b"x")
        except ValueError:  # "Bidirectional stream limit N exceeded"
            return opened
        opened += 1
    return opened


def test_the_sp_lets_the_sc_open_its_streams_per_pipe_and_no_more(tmp_path: Path) -> None:
    """qh3 fixes 100; the SP's QUIC limit is its streams_per_pipe plus the headroom
    that lets an OPEN past the limit reach the SP and be refused with a reason."""
    assert streams_the_server_may_open(tmp_path, 5) == 5 + qh3_compat.STREAM_HEADROOM
    assert streams_the_server_may_open(tmp_path, 300) == 300 + qh3_compat.STREAM_HEADROOM


def test_the_offloads_qh3_uses_are_named_and_none_on_a_plain_transport() -> None:
    """GSO/GRO where the kernel has them (this Linux), plain sends elsewhere."""

    async def look() -> tuple[str, str]:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        transport, _ = await qh3_compat.optimized_datagram_transport(
            loop, asyncio.DatagramProtocol, sock=sock
        )
        plain, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        try:
            return qh3_compat.offloads(transport), qh3_compat.offloads(plain)
        finally:
            transport.close()
            plain.close()

    optimized, plain = asyncio.run(look())
    assert "GSO on" in optimized  # Linux >= 4.18 on loopback
    assert plain == "GSO off, GRO off"


# --- the clock --------------------------------------------------------------------------


def _handshaken_pair(tmp_path: Path, now: float) -> tuple[QuicConnection, QuicConnection]:
    """A qh3 client and server, handshake done in memory at ``now``."""
    cert = make_key("127.0.0.1", tmp_path)
    server_conf = QuicConfiguration(is_client=False, alpn_protocols=["t"])
    server_conf.load_cert_chain(cert, tmp_path / "127.0.0.1-key.pem")
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=["t"], verify_mode=ssl.CERT_NONE
        )
    )
    server = QuicConnection(
        configuration=server_conf,
        original_destination_connection_id=client.original_destination_connection_id,
    )
    client.connect(SERVER, now=now)
    for _ in range(10):
        _deliver(client, server, now)
        _deliver(server, client, now)
    assert _drain(client) and _drain(server)  # HandshakeCompleted, at least
    return client, server


CLIENT, SERVER = ("192.0.2.1", 4000), ("192.0.2.2", 4433)


def _deliver(sender: QuicConnection, receiver: QuicConnection, now: float) -> int:
    datagrams = sender.datagrams_to_send(now=now)
    source = CLIENT if sender._is_client else SERVER
    for data, _ in datagrams:
        receiver.receive_datagram(data, source, now=now)
    return len(datagrams)


def _drain(connection: QuicConnection) -> list[QuicEvent]:
    events: list[QuicEvent] = []
    while (event := connection.next_event()) is not None:
        events.append(event)
    return events


def _exchanges_held(client: QuicConnection, server: QuicConnection, now: float, step: float) -> int:
    """40 request/response exchanges on one stream, ``step`` s of clock apart; how many
    of the sends qh3 held back (no datagram) at the time of the write."""
    stream = client.get_next_available_stream_id()
    held = 0
    for _ in range(40):
        now += step
        client.send_stream_data(stream, b"q" * 80)
        held += _deliver(client, server, now) == 0
        if any(isinstance(e, StreamDataReceived) for e in _drain(server)):
            server.send_stream_data(stream, b"r" * 350)
            held += _deliver(server, client, now) == 0
            _drain(client)
    return held


def test_qh3_holds_packets_back_while_the_clock_it_is_given_stands_still(
    tmp_path: Path,
) -> None:
    # Why the carrier gives qh3 a clock of its own: qh3's pacer refills only as ``now``
    # advances, and uvloop's loop.time() moves in whole milliseconds.
    client, server = _handshaken_pair(tmp_path, 100.0)
    assert _exchanges_held(client, server, 100.0, step=0.0) > 20
    client, server = _handshaken_pair(tmp_path / "2", 100.0)
    assert _exchanges_held(client, server, 100.0, step=0.0002) == 0  # 200 µs a round trip


def test_qh3_is_given_a_clock_finer_than_uvloops_milliseconds() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def run() -> tuple[set[float], set[float], float]:
        loop = asyncio.get_running_loop()
        protocol = qh3_compat.CompatProtocol(
            QuicConnection(configuration=QuicConfiguration(is_client=True))
        )
        loop_times, quic_times = set(), set()
        deadline = time.monotonic() + 0.003
        while time.monotonic() < deadline:  # 3 ms
            loop_times.add(loop.time())
            quic_times.add(protocol._loop_time())
        return loop_times, quic_times, protocol._loop_time() - loop.time()

    loop_times, quic_times, apart = uvloop.run(run())
    assert all(abs(t * 1000 - round(t * 1000)) < 1e-6 for t in loop_times)  # whole ms
    assert len(loop_times) <= 5
    assert len(quic_times) > 100  # qh3's clock moves between its calls
    assert 0 <= apart < 0.01  # one clock: qh3's deadlines mean the same to loop.call_at
