"""The ``udp`` carrier: one QUIC connection per pipe (qh3), TLS 1.3 inside.

qh3 (a maintained fork of aioquic with its core in Rust) was chosen over
aioquic by measurement (docs/scaling.md has the figures).

This module is the carrier (``listen``, ``dial``, the TLS configuration) and
``PipeProtocol``, qh3's asyncio glue for one pipe; ``server`` is the SC's
server, fed batches of datagrams, that counts every datagram it drops;
``pipe.QuicPipe`` maps a pipe onto QUIC streams, and ``qh3_compat`` is the one
place that touches qh3's internals (and checks its version).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, cast

from qh3.asyncio.client import connect
from qh3.quic import events
from qh3.quic.configuration import QuicConfiguration
from qh3.quic.connection import QuicConnection

from edgerq import defaults
from edgerq.carriers.adapter import build_pipe
from edgerq.carriers.quic import (
    gone_notice,
    qh3_compat,  # raises UnsupportedQh3 at import on a qh3 release it does not know
)
from edgerq.carriers.quic.pipe import QuicPipe
from edgerq.carriers.quic.server import BatchingServer, QuicListener
from edgerq.config.model import ListenerConfig, PipeConfig
from edgerq.config.tls import check_ca_file, check_key_pair, ensure_certificate, fingerprint_der
from edgerq.errors import AuthError
from edgerq.pipe.interface import ConsumerOwner, MuxPipe, ProviderOwner

log = logging.getLogger("edgerq.quic")

qh3_compat.install()

ALPN = "edgerq/1"
IDLE_TIMEOUT = 10.0
# What a peer may have in flight to us, which qh3 holds until it is in order: per
# stream no more than the default edgerq window, per connection 16 MiB (what is
# delivered is bounded by our windows and pipe_buffer; docs/scaling.md, "Memory per pipe").
MAX_DATA = defaults.PIPE_BUFFER // 4
MAX_STREAM_DATA = defaults.STREAM_WINDOW


DEFAULT_DATAGRAM: int = QuicConfiguration.max_datagram_size
"""qh3's datagram size where nothing better is known (1280; it probes up from there)."""
MAX_DATAGRAM = 16000
"""The largest UDP payload an SP sends, where the route's MTU allows it (loopback:
65536; 1500-byte Ethernet keeps ~1450). qh3's cost is per datagram (encryption,
framing, a Python call each), so larger datagrams cost less CPU per byte. 16000
and not more: four still fill one GSO send, and a receiver on the kernel's
default 208 KiB socket buffer (``net.core.rmem_max``) drops bursts of 64 KB
datagrams (docs/scaling.md has the measurements)."""

_IP_MTU = getattr(socket, "IP_MTU", 14)  # Linux
_IPV6_MTU = getattr(socket, "IPV6_MTU", 24)
_UDP_OVERHEAD = {int(socket.AF_INET): 28, int(socket.AF_INET6): 48}


def route_datagram_size(family: int, address: Any) -> int | None:
    """The UDP payload the route to ``address`` carries unfragmented (the MTU of its
    first hop, as the kernel knows it), or None where the kernel does not say.

    A connected UDP socket sends nothing, it only looks the route up. qh3's path MTU
    probing then finds what the rest of the path allows, at most this."""
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            if family == socket.AF_INET6:
                mtu = probe.getsockopt(socket.IPPROTO_IPV6, _IPV6_MTU)
            else:
                mtu = probe.getsockopt(socket.IPPROTO_IP, _IP_MTU)
    except OSError:
        return None
    return min(MAX_DATAGRAM, int(mtu) - _UDP_OVERHEAD.get(family, 48))


async def _datagram_size(host: str, port: int) -> int:
    """What an SP's QUIC connection to ``host`` may grow its datagrams to (qh3's
    ``max_datagram_size``): the route's MTU where the kernel knows it, else qh3's
    safe default (1280; it probes up to ~1450 from there)."""
    loop = asyncio.get_running_loop()
    try:
        family, _, _, _, address = (await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM))[0]
    except (OSError, IndexError):
        return DEFAULT_DATAGRAM
    size = route_datagram_size(family, address)
    if size is None:
        log.debug("the route MTU to %s is not known: QUIC datagrams of qh3's default size", host)
        return DEFAULT_DATAGRAM
    return max(size, DEFAULT_DATAGRAM)


SOCKET_BUFFER = 4 * 1024 * 1024
"""UDP socket buffers: a burst of datagrams must not overflow the kernel's default 208 KiB."""


def _enlarge_buffers(transport: asyncio.BaseTransport | None) -> None:
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)
        except OSError as exc:  # capped by net.core.[rw]mem_max; still works, just smaller
            log.debug("cannot set UDP socket buffer: %s", exc)


class PipeProtocol(qh3_compat.CompatProtocol):
    """aioquic's asyncio glue for one pipe: QUIC events in, ``QuicPipe`` calls out."""

    def __init__(
        self,
        quic: QuicConnection,
        stream_handler: Any = None,
        *,
        owner: ConsumerOwner | ProviderOwner,
        pin: str | None = None,
        is_client: bool = False,
        id_secret: bytes | None = None,
    ) -> None:
        super().__init__(quic, stream_handler)
        if id_secret is not None:
            # SC: the id the SP will address this pipe's packets to, tagged so a
            # restarted SC knows them for its predecessor's (see gone_notice).
            quic.host_cid = gone_notice.tagged_id(id_secret)
        self.is_client = is_client
        self._pin = pin
        self.pipe = build_pipe(QuicPipe, owner)
        self.pipe.attach(self)
        if is_client:
            # The SC opens the streams: the SP's QUIC stream limit is its pipe's
            # streams_per_pipe (set before qh3 starts the connection, in connect()).
            qh3_compat.set_stream_limit(quic.configuration, self.pipe.status().max_streams)
        self._admitted = is_client
        self._sent_to = b""
        """SP: the connection id its latest packet was addressed to (see gone_notice)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.is_client:
            self.wrap_batch_send(self._noting_id)

    def _noting_id(
        self, send_many: Callable[[list[bytes], Any], None]
    ) -> Callable[[list[bytes], Any], None]:
        def send_and_note_id(datagrams: list[bytes], addr: Any) -> None:
            # One look per batch: a connection's packets share its current id.
            last = datagrams[-1]
            if gone_notice.is_short_header(last):
                self._sent_to = gone_notice.destination_id(last)
            send_many(datagrams, addr)

        return send_and_note_id

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        # The first datagram of a connection always comes this way (batches only
        # go to connections already established), so it is where a source is admitted.
        if not self._admitted and not self._admit(addr):
            return
        self.datagrams_received([cast(bytes, data)], addr)

    def _gone_notices(self, data: list[bytes]) -> list[bytes]:
        """SP: act on the SC's notices in ``data``; the rest is QUIC's."""
        rest = []
        for datagram in data:
            named = gone_notice.parse_notice(datagram)
            if named is None:
                rest.append(datagram)
            elif self._sent_to and named == self._sent_to:
                self.pipe.peer_forgot()
        return rest

    def _admit(self, addr: Any) -> bool:
        """SC: the first datagram names the source; a refused one costs no TLS handshake."""
        self._admitted = True
        pipe = self.pipe
        pipe.quic_ready(addr)
        if pipe.refused:
            self.forget()  # the server forgets this connection
            return False
        return True

    def datagrams_received(self, data: list[bytes], addr: Any) -> None:
        # qh3's own version, with the stream data of the whole batch delivered
        # before the acknowledgements (and our WINDOW frames) are transmitted.
        pipe = self.pipe
        if self.is_client and any(len(d) == gone_notice.NOTICE_LENGTH for d in data):
            data = self._gone_notices(data)
            if not data:
                return
        pipe.begin_batch()
        try:
            self.receive_batch(data, addr)
        finally:
            pipe.end_batch()
        self.transmit()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        pipe = self.pipe
        if isinstance(event, events.StreamDataReceived):
            pipe.quic_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.StreamReset):
            pipe.quic_stream_reset(event.stream_id)
        elif isinstance(event, events.HandshakeCompleted):
            if self.is_client:
                if not self._check_pin():
                    return
                pipe.quic_ready()
        elif isinstance(event, events.ConnectionTerminated):
            reason = event.reason_phrase or f"QUIC error {event.error_code:#x}"
            pipe.quic_terminated(f"QUIC connection closed: {reason}")

    def _check_pin(self) -> bool:
        if self._pin is None:
            return True
        certificate = self.quic.get_peercert()
        received = (
            fingerprint_der(certificate.public_bytes()) if certificate is not None else "none"
        )
        if received == self._pin:
            return True
        message = (
            f"the SC's certificate does not match the pinned fingerprint: expected "
            f"{self._pin}, received {received}"
        )
        log.error("%s: %s", self.pipe, message)
        self.pipe.abort(message, AuthError(message))
        return False

    def close_transport_later(self) -> None:
        # Give the CONNECTION_CLOSE a moment to leave before the socket goes.
        transport = self.transport
        if transport is not None:
            self.loop.call_later(0.2, transport.close)


def _configuration(is_client: bool, **settings: Any) -> QuicConfiguration:
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        idle_timeout=IDLE_TIMEOUT,
        connection_id_length=gone_notice.CONNECTION_ID_LENGTH,
        max_data=MAX_DATA,
        max_stream_data=MAX_STREAM_DATA,
        **settings,
    )


def server_configuration(listener: ListenerConfig) -> QuicConfiguration:
    assert listener.certificate is not None and listener.private_key is not None
    ensure_certificate(listener.certificate, listener.private_key)
    check_key_pair(listener.certificate, listener.private_key)
    configuration = _configuration(is_client=False)
    configuration.load_cert_chain(listener.certificate, listener.private_key)
    return configuration


def client_configuration(pipe: PipeConfig) -> QuicConfiguration:
    configuration = _configuration(is_client=True, server_name=pipe.server_name or pipe.hostname)
    if pipe.ca_file is not None:
        check_ca_file(pipe.ca_file)
        configuration.verify_mode = ssl.CERT_REQUIRED
        configuration.load_verify_locations(cafile=str(pipe.ca_file))
    else:
        configuration.verify_mode = ssl.CERT_NONE  # pinned, or insecure by choice
    return configuration


async def listen(listener: ListenerConfig, owner: ConsumerOwner) -> QuicListener:
    qh3_compat.require_known_version()
    configuration = server_configuration(listener)
    loop = asyncio.get_running_loop()
    family, kind, proto, _, address = (
        await loop.getaddrinfo(listener.host, listener.port, type=socket.SOCK_DGRAM)
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    assert listener.private_key is not None
    id_secret = gone_notice.tag_secret(listener.private_key.read_bytes())
    _, server = await qh3_compat.optimized_datagram_transport(
        loop,
        lambda: BatchingServer(
            configuration=configuration,
            create_protocol=functools.partial(PipeProtocol, owner=owner, id_secret=id_secret),
            retry=True,
            id_secret=id_secret,
        ),
        sock=sock,
    )
    server = cast(BatchingServer, server)
    _enlarge_buffers(server.transport)
    accepting = QuicListener(server)
    log.info("udp pipe port %s: %s", accepting.address[1], qh3_compat.offloads(server.transport))
    return accepting


@asynccontextmanager
async def dial(pipe: PipeConfig, owner: ProviderOwner, timeout: float) -> AsyncIterator[MuxPipe]:
    qh3_compat.require_known_version()
    configuration = client_configuration(pipe)
    created: list[PipeProtocol] = []

    def protocol_factory(*args: Any, **kwargs: Any) -> PipeProtocol:
        protocol = PipeProtocol(
            *args, owner=owner, pin=pipe.server_fingerprint, is_client=True, **kwargs
        )
        created.append(protocol)
        return protocol

    async with asyncio.timeout(timeout):
        configuration.max_datagram_size = await _datagram_size(pipe.hostname, pipe.port)
        manager = connect(
            pipe.hostname,
            pipe.port,
            configuration=configuration,
            create_protocol=protocol_factory,
        )
        try:
            protocol = cast(PipeProtocol, await manager.__aenter__())
        except ConnectionError as exc:
            # Say why the QUIC handshake failed (certificate, ALPN, ...), not just "failed".
            reason = created[0].pipe.close_reason if created else ""
            raise ConnectionError(reason or "QUIC handshake failed") from exc
    _enlarge_buffers(protocol.transport)
    log.debug(
        "udp pipe to %s:%s: %s, datagrams up to %d B",
        pipe.hostname,
        pipe.port,
        qh3_compat.offloads(protocol.transport),
        configuration.max_datagram_size,
    )
    try:
        yield protocol.pipe
    finally:
        await manager.__aexit__(None, None, None)


__all__ = ["QuicListener", "QuicPipe", "dial", "listen"]
