"""Everything edgerq uses of qh3 that is not qh3's public API, in one place.

The ``udp`` carrier needs a few of qh3's internals: its fast datagram
transport (a private module), the per-connection send path and address, the
server's table of connection ids, and the stream-count constants its Rust core
and transport parameters hard-code (100, with no setting). Each is reached here
and only here, behind a name of ours, and only on a qh3 release this module
was written against (``KNOWN_VERSIONS``, the one pinned in pyproject.toml and
requirements/image.lock). On any other release the udp carrier refuses to
start, with a message naming both versions, instead of misbehaving quietly.

Porting to a new qh3 release: read the places marked ``qh3 2.1.0`` below
against the new source, then add its version to ``KNOWN_VERSIONS``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import qh3

from edgerq import defaults
from edgerq.errors import ConfigError

KNOWN_VERSIONS = ("2.1.0",)
"""qh3 releases whose internals this module was checked against."""


class UnsupportedQh3(ConfigError):
    """The installed qh3 is a release this module does not know."""


def installed_version() -> str:
    return str(getattr(qh3, "__version__", "unknown"))


def require_known_version() -> None:
    """Raise ``UnsupportedQh3`` unless the installed qh3 is one of ``KNOWN_VERSIONS``."""
    found = installed_version()
    if found not in KNOWN_VERSIONS:
        raise UnsupportedQh3(
            f"the udp carrier needs qh3 {' or '.join(KNOWN_VERSIONS)} (it reaches into "
            f"internals of that release), but qh3 {found} is installed: install "
            f"qh3=={KNOWN_VERSIONS[-1]} (as pinned in requirements/image.lock), or use "
            "the tcp carrier"
        )


require_known_version()  # before touching any private name of an unknown release

# qh3 2.1.0: private names, imported only once the version is known.
from qh3._hazmat import pull_quic_header as _pull_quic_header  # noqa: E402
from qh3.asyncio._transport import (  # noqa: E402
    create_optimized_datagram_transport as optimized_datagram_transport,
)
from qh3.asyncio.protocol import QuicConnectionProtocol  # noqa: E402
from qh3.asyncio.server import QuicServer  # noqa: E402
from qh3.quic.configuration import QuicConfiguration  # noqa: E402
from qh3.quic.connection import QuicConnection  # noqa: E402
from qh3.quic.packet import (  # noqa: E402
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
)

__all__ = [
    "KNOWN_VERSIONS",
    "CompatProtocol",
    "CompatServer",
    "Drop",
    "UnsupportedQh3",
    "install",
    "offloads",
    "optimized_datagram_transport",
    "remote_address",
    "require_known_version",
    "set_stream_limit",
]

# --- the stream limit --------------------------------------------------------------

STREAM_HEADROOM = 100
"""QUIC streams a pipe's SP allows beyond its ``streams_per_pipe``: so an OPEN past
the limit still reaches the SP and is refused with a reason (what the docs promise),
instead of waiting in QUIC for a free stream slot."""

_QH3_STREAMS_BIDI = 100
_QH3_STREAMS_UNI = 103
_STREAMS_ATTRIBUTE = "_edgerq_max_streams_bidi"
_current_limit: contextvars.ContextVar[int] = contextvars.ContextVar(
    "edgerq_max_streams_bidi", default=defaults.STREAMS_PER_PIPE + STREAM_HEADROOM
)


def set_stream_limit(configuration: QuicConfiguration, streams_per_pipe: int) -> None:
    """Connections made with ``configuration`` let the peer open ``streams_per_pipe``
    concurrent bidirectional streams (plus ``STREAM_HEADROOM``)."""
    setattr(configuration, _STREAMS_ATTRIBUTE, streams_per_pipe + STREAM_HEADROOM)


def stream_limit(configuration: QuicConfiguration) -> int:
    """The concurrent bidirectional streams a connection with ``configuration`` allows."""
    value = getattr(configuration, _STREAMS_ATTRIBUTE, None)
    return int(value) if value is not None else _current_limit.get()


def install() -> None:
    """Make qh3 take its stream limit from the connection's configuration.

    qh3 2.1.0 hard-codes 100 concurrent bidirectional streams twice: as the 22nd
    argument of ``QuicConnectionCore`` (the limit its Rust core enforces), built in
    ``QuicConnection._create_core``, and as ``initial_max_streams_bidi`` in
    ``QuicTlsBridge.serialize_transport_parameters`` (what it announces). Both are
    replaced by ``stream_limit(configuration)``; only where they have exactly that
    value and place (checked on every call). Idempotent.
    """
    require_known_version()
    import qh3.quic.connection as qh3_connection
    import qh3.quic.tls_bridge as qh3_tls_bridge

    if getattr(qh3_connection, "_edgerq_installed", False):
        return
    core_class: Any = getattr(qh3_connection, "QuicConnectionCore")  # noqa: B009
    parameters_class: Any = getattr(qh3_tls_bridge, "QuicTransportParameters")  # noqa: B009
    create_core: Any = QuicConnection._create_core
    serialize: Any = qh3_tls_bridge.QuicTlsBridge.serialize_transport_parameters

    def core_with_our_limit(*args: Any) -> Any:
        if len(args) > 22 and args[21] == _QH3_STREAMS_BIDI and args[22] == _QH3_STREAMS_UNI:
            args = (*args[:21], _current_limit.get(), *args[22:])
        return core_class(*args)

    def parameters_with_our_limit(**kwargs: Any) -> Any:
        if kwargs.get("initial_max_streams_bidi") == _QH3_STREAMS_BIDI:
            kwargs["initial_max_streams_bidi"] = _current_limit.get()
        return parameters_class(**kwargs)

    def create_core_with_limit(self: Any, *args: Any, **kwargs: Any) -> Any:
        token = _current_limit.set(stream_limit(self._configuration))
        try:
            return create_core(self, *args, **kwargs)
        finally:
            _current_limit.reset(token)

    def serialize_with_limit(self: Any) -> Any:
        token = _current_limit.set(stream_limit(self.configuration))
        try:
            return serialize(self)
        finally:
            _current_limit.reset(token)

    setattr(qh3_connection, "QuicConnectionCore", core_with_our_limit)  # noqa: B010
    setattr(qh3_tls_bridge, "QuicTransportParameters", parameters_with_our_limit)  # noqa: B010
    setattr(QuicConnection, "_create_core", create_core_with_limit)  # noqa: B010
    qh3_tls_bridge.QuicTlsBridge.serialize_transport_parameters = serialize_with_limit  # type: ignore[method-assign]
    setattr(qh3_connection, "_edgerq_installed", True)  # noqa: B010


# --- connections ---------------------------------------------------------------------


def remote_address(quic: QuicConnection) -> Any:
    """The peer's current address (qh3 2.1.0: ``QuicConnection._remote_addr``)."""
    return getattr(quic, "_remote_addr", None)


def offloads(transport: asyncio.BaseTransport | None) -> str:
    """Which segmentation offloads qh3's datagram transport uses, for one log line:
    GSO (several equal-size datagrams in one send) and GRO (one receive for several).
    qh3 2.1.0: ``OptimizedDatagramTransport._gso_enabled`` / ``_gro_enabled`` (it
    falls back to plain sends by itself when the kernel or the NIC refuses GSO)."""
    gso = bool(getattr(transport, "_gso_enabled", False))
    gro = bool(getattr(transport, "_gro_enabled", False))
    return f"GSO {'on' if gso else 'off'}, GRO {'on' if gro else 'off'}"


BatchSend = Callable[[list[bytes], Any], None]
"""Sends a batch of datagrams to one address (GSO)."""


class CompatProtocol(QuicConnectionProtocol):
    """qh3's asyncio glue for one connection, with its private members under our names.

    Its clock is ``time.monotonic()``, not the loop's: uvloop's ``loop.time()`` moves
    in whole milliseconds, and qh3's pacer refills only as the ``now`` it is given
    advances. Within one millisecond a pipe sending small packets quickly found them
    held; qh3's timer for them came due at once (uvloop rounds delays to milliseconds)
    and found the clock unmoved, every few microseconds until the millisecond turned:
    the packet up to 1 ms late, and an SP at one keep-alive connection woke about once
    per request for nothing (one 4 s run of about 8,500 requests: 8,625 timer calls,
    7,729 of them sending nothing; 773 with this clock). On Linux both clocks are
    ``CLOCK_MONOTONIC``, so qh3's deadlines mean the same to ``loop.call_at``.
    """

    def __init__(self, quic: QuicConnection, stream_handler: Any = None) -> None:
        super().__init__(quic, stream_handler)
        self._loop_time = time.monotonic  # qh3 2.1.0: the clock of its transmit and receive

    @property
    def quic(self) -> QuicConnection:
        return self._quic

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self._transport

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def receive_batch(self, data: list[bytes], addr: Any) -> None:
        """Feed a batch of datagrams to the connection and handle its events (no transmit)."""
        self._quic.receive_many_datagrams(data, addr, now=self._loop_time())
        self._process_events()

    def wrap_batch_send(self, wrap: Callable[[BatchSend], BatchSend]) -> None:
        """Route batched sends (GSO) through ``wrap(original)``, when the transport batches."""
        send_many = self._sendto_many
        if send_many is not None:
            self._sendto_many = wrap(send_many)

    def forget(self) -> None:
        """Server side: the server drops this connection from its table."""
        self._connection_terminated_handler()


# --- the server ----------------------------------------------------------------------


class Drop:
    """Why the server dropped a datagram (the ``reason`` label of the drop metric)."""

    TOO_SHORT = "too_short"
    """Shorter than any QUIC packet this server accepts (header, and the 20 bytes
    header protection samples: RFC 9001 5.4.2)."""
    BAD_HEADER = "bad_header"
    """Not a QUIC header qh3 can parse (the fixed bit clear, truncated fields, ...)."""
    UNSUPPORTED_VERSION = "unsupported_version"
    """A long header of another QUIC version: answered with Version Negotiation."""
    INITIAL_TOO_SMALL = "initial_too_small"
    """An Initial in a datagram under 1200 bytes (RFC 9000 14.1)."""
    RETRY = "retry"
    """An Initial without a token: answered with a stateless Retry, nothing kept
    (every legitimate pipe's first datagram too: one per dial)."""
    BAD_TOKEN = "bad_token"
    """An Initial whose Retry token does not validate (forged, expired, other source)."""
    UNKNOWN_CONNECTION = "unknown_connection"
    """Not an Initial, for a connection id this server does not have."""

    ALL = (
        TOO_SHORT,
        BAD_HEADER,
        UNSUPPORTED_VERSION,
        INITIAL_TOO_SMALL,
        RETRY,
        BAD_TOKEN,
        UNKNOWN_CONNECTION,
    )


MIN_INITIAL = 1200


class CompatServer(QuicServer):
    """qh3's QUIC server with every datagram it turns away reported to ``dropped``."""

    @property
    def protocols(self) -> dict[bytes, QuicConnectionProtocol]:
        """Connection id -> its connection (qh3 2.1.0: ``QuicServer._protocols``)."""
        return self._protocols

    @property
    def transport(self) -> asyncio.DatagramTransport | None:
        return self._transport

    @property
    def connection_id_length(self) -> int:
        return int(self._configuration.connection_id_length)

    @property
    def min_datagram(self) -> int:
        """The smallest QUIC packet this server accepts: a short header and the 20
        bytes header protection samples after it (RFC 9001 5.4.2)."""
        return 1 + int(self._configuration.connection_id_length) + 20

    def dropped(self, reason: str, data: bytes, addr: Any) -> None:
        """A datagram was turned away for ``reason`` (one of ``Drop.ALL``)."""

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        # qh3 2.1.0's QuicServer.datagram_received, step for step, with each silent
        # ``return`` reported to ``dropped`` first.
        data = cast(bytes, data)
        configuration = self._configuration
        if len(data) < self.min_datagram:
            self.dropped(Drop.TOO_SHORT, data, addr)
            return
        try:
            (version, packet_type, _, destination_cid, source_cid, token, *_) = _pull_quic_header(
                data, 0, configuration.connection_id_length
            )
        except ValueError:
            self.dropped(Drop.BAD_HEADER, data, addr)
            return
        transport = self._transport
        assert transport is not None
        if version is not None and version not in configuration.supported_versions:
            transport.sendto(
                encode_quic_version_negotiation(
                    source_cid=destination_cid,
                    destination_cid=source_cid,
                    supported_versions=configuration.supported_versions,
                ),
                addr,
            )
            self.dropped(Drop.UNSUPPORTED_VERSION, data, addr)
            return
        protocol = self._protocols.get(destination_cid)
        if protocol is None:
            if QuicPacketType(packet_type) != QuicPacketType.INITIAL:
                self.dropped(Drop.UNKNOWN_CONNECTION, data, addr)
                return
            if len(data) < MIN_INITIAL:
                self.dropped(Drop.INITIAL_TOO_SMALL, data, addr)
                return
            assert version is not None  # a long header (an Initial) always has one
            protocol = self._new_connection(data, addr, version, destination_cid, source_cid, token)
            if protocol is None:
                return
        protocol.datagram_received(data, addr)

    def _new_connection(
        self,
        data: bytes,
        addr: Any,
        version: int,
        destination_cid: bytes,
        source_cid: bytes,
        token: bytes,
    ) -> QuicConnectionProtocol | None:
        transport = self._transport
        assert transport is not None
        original_cid: bytes | None = destination_cid
        retry_cid: bytes | None = None
        if self._retry is not None:
            if not token:
                new_cid = os.urandom(8)
                transport.sendto(
                    encode_quic_retry(
                        version=version,
                        source_cid=new_cid,
                        destination_cid=source_cid,
                        original_destination_cid=destination_cid,
                        retry_token=self._retry.create_token(addr, destination_cid, new_cid),
                    ),
                    addr,
                )
                self.dropped(Drop.RETRY, data, addr)
                return None
            try:
                original_cid, retry_cid = self._retry.validate_token(addr, token)
            except ValueError:
                self.dropped(Drop.BAD_TOKEN, data, addr)
                return None
        connection = QuicConnection(
            configuration=self._configuration,
            original_destination_connection_id=original_cid,
            retry_source_connection_id=retry_cid,
            session_ticket_fetcher=self._session_ticket_fetcher,
            session_ticket_handler=self._session_ticket_handler,
        )
        protocol = self._create_protocol(connection, stream_handler=self._stream_handler)
        protocol.connection_made(transport)
        protocol._connection_id_issued_handler = partial(
            self._connection_id_issued, protocol=protocol
        )
        protocol._connection_id_retired_handler = partial(
            self._connection_id_retired, protocol=protocol
        )
        protocol._connection_terminated_handler = partial(
            self._connection_terminated, protocol=protocol
        )
        self._protocols[destination_cid] = protocol
        self._protocols[connection.host_cid] = protocol
        return cast(QuicConnectionProtocol, protocol)
