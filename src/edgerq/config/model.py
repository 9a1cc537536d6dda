"""Configuration as frozen dataclasses, every default already filled in."""

from __future__ import annotations

import ipaddress
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edgerq import defaults

Carrier = Literal["tcp", "udp"]
ServiceType = Literal["tcp", "http"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Secret:
    """A token that never shows itself in logs, reprs or `edgerq check`."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value.encode("utf-8")

    def __repr__(self) -> str:
        return "Secret('MASKED')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def bind_host(inaddr_any: bool, bind_address: str | None = None) -> str:
    """Where to listen: ``bind_address`` when set, else all addresses or 127.0.0.1."""
    if bind_address is not None:
        return bind_address
    return "0.0.0.0" if inaddr_any else "127.0.0.1"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin HTTP endpoint: /metrics, /healthz, /readyz, /status."""

    port: int
    inaddr_any: bool = False
    bind_address: str | None = None
    """One local address to listen on, instead of all (``inaddr_any``) or 127.0.0.1."""

    @property
    def host(self) -> str:
        return bind_host(self.inaddr_any, self.bind_address)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """Where the SC accepts pipes from SPs."""

    port: int
    inaddr_any: bool = False
    protocol: Carrier = "tcp"
    certificate: Path | None = None
    """udp: the SC's TLS certificate (PEM); generated on first start when not configured."""
    private_key: Path | None = None
    bind_address: str | None = None
    """One local address to listen on, instead of all (``inaddr_any``) or 127.0.0.1."""

    @property
    def host(self) -> str:
        return bind_host(self.inaddr_any, self.bind_address)


@dataclass(frozen=True, slots=True)
class ConsumerService:
    """A service the SC offers on a local TCP port, served by SPs that register its UUID."""

    uuid: uuid.UUID
    name: str
    port: int
    inaddr_any: bool = False
    max_connections: int = defaults.MAX_CONNECTIONS
    """Most concurrent tunneled connections; further clients wait in the backlog."""
    request_buffer: int = defaults.REQUEST_BUFFER
    """Bytes read from a socket at a time, and the largest data frame."""
    request_ttl: float = defaults.REQUEST_TTL
    """Seconds a new connection may take to reach the service end to end."""
    stream_window: int = defaults.STREAM_WINDOW
    """Flow-control window of one stream, in bytes."""
    type: ServiceType = "tcp"
    """``http`` answers 502/503/504 when the tunnel cannot serve."""
    idle_timeout: float | None = None
    """Seconds without a byte either way after which a connection is closed (None: never)."""
    bind_address: str | None = None
    """One local address to listen on (e.g. where only the front can reach it), instead
    of all addresses (``inaddr_any``) or 127.0.0.1."""
    connections_per_source: int | None = None
    """Most of ``max_connections`` one source address may hold (None: all but a fifth)."""
    waiting_per_source: int = defaults.WAITING_PER_SOURCE
    """Most connections of one source address waiting for a slot; more are refused."""
    trusted_sources: tuple[Network, ...] = ()
    """Source addresses (a reverse proxy in front) held only to ``max_connections``."""
    header_timeout: float | None = defaults.HEADER_TIMEOUT
    """``http``: seconds to send the head of the first request (None: no deadline)."""
    min_rate: float | None = None
    """Bytes per second below which a window with traffic closes the connection
    (0: never; None: ``MIN_RATE_HTTP`` or ``MIN_RATE_TCP`` by ``type``)."""
    rate_window: float = defaults.RATE_WINDOW
    """Seconds over which ``min_rate`` is judged."""
    listen_backlog: int = defaults.LISTEN_BACKLOG
    """Connections the kernel queues on the port before they are accepted."""

    @property
    def host(self) -> str:
        return bind_host(self.inaddr_any, self.bind_address)

    @property
    def per_source_cap(self) -> int:
        """Most slots one (untrusted) source may hold at once."""
        if self.connections_per_source is not None:
            return min(self.connections_per_source, self.max_connections)
        return self.max_connections - self.max_connections // 5

    @property
    def effective_min_rate(self) -> float:
        if self.min_rate is not None:
            return self.min_rate
        return defaults.MIN_RATE_HTTP if self.type == "http" else defaults.MIN_RATE_TCP


@dataclass(frozen=True, slots=True)
class PipeLimits:
    """Limits against abuse on the pipes a daemon accepts or dials (``<limits>``)."""

    auth_failures: int = defaults.AUTH_FAILURES
    """Failed authentications from one source address within ``auth_window`` that block it."""
    auth_window: float = defaults.AUTH_WINDOW
    auth_block: float = defaults.AUTH_BLOCK
    """Seconds a blocked source's pipes are refused before the handshake."""
    tracked_sources: int = defaults.TRACKED_SOURCES
    """Most source addresses remembered at once (the oldest are forgotten first)."""
    unauthenticated_pipes: int = defaults.UNAUTHENTICATED_PIPES
    """Most pipes at once that have not completed the handshake; further ones are refused."""
    handshake_timeout: float = defaults.HANDSHAKE_TIMEOUT
    """Seconds a pipe may take to authenticate."""
    control_backlog: int = defaults.CONTROL_BACKLOG
    """Most bytes of control frames (PONG, WINDOW, OPEN_OK, ...) queued towards a peer
    that does not read; past it the pipe is closed. DATA is bounded by stream windows."""
    streams_per_pipe: int = defaults.STREAMS_PER_PIPE
    """Most concurrent streams the peer may open on one pipe (SP side)."""
    pipe_buffer: int = defaults.PIPE_BUFFER
    """Most bytes one pipe's streams may hold, received and not yet taken by their local
    sockets; the stream that would pass it is reset (and a peer that keeps at it loses
    the pipe)."""


@dataclass(frozen=True, slots=True)
class ConsumerConfig:
    path: Path
    listeners: tuple[ListenerConfig, ...]
    services: tuple[ConsumerService, ...] = ()
    auth_token: Secret | None = None
    token_source: str = "none"
    """Where the token came from: config, EDGERQ_AUTH_TOKEN, EDGERQ_AUTH_TOKEN_FILE or none."""
    admin: AdminConfig | None = None
    shutdown_grace: float = defaults.SHUTDOWN_GRACE
    """Seconds open streams may take to finish on SIGTERM (or when a reload removes
    their service) before they are cut."""
    limits: PipeLimits = PipeLimits()
    access_log: bool = False
    """Log each client connection that ended well at INFO (at DEBUG when off);
    connections that failed or were refused are logged either way."""

    @property
    def listener(self) -> ListenerConfig:
        """The first listener (most configs have exactly one)."""
        return self.listeners[0]


@dataclass(frozen=True, slots=True)
class ProviderService:
    """A service behind the SP, offered to the SC under its UUID."""

    uuid: uuid.UUID
    name: str
    hostname: str
    port: int
    proxy_protocol: int | None = None
    """1 or 2: start every connection with a PROXY protocol header of that version."""
    idle_timeout: float | None = None
    """Seconds without a byte either way after which a connection is closed (None: never)."""


@dataclass(frozen=True, slots=True)
class PipeConfig:
    """One pipe the SP dials to an SC (directly or through a local stunnel client)."""

    name: str
    hostname: str
    port: int
    services: tuple[ProviderService, ...]
    protocol: Carrier = "tcp"
    auth_token: Secret | None = None
    token_source: str = "none"
    ca_file: Path | None = None
    """udp: verify the SC's certificate against this CA bundle."""
    server_fingerprint: str | None = None
    """udp: accept only an SC certificate with this SHA-256 fingerprint (AB:CD:…)."""
    server_name: str | None = None
    """udp: the name to verify in the SC's certificate (default: hostname)."""
    insecure: bool = False
    """udp: accept any SC certificate (a warning says so at every start)."""
    all_addresses: bool = False
    """Dial every address ``hostname`` resolves to, one pipe each (SC replicas behind a
    Swarm ``tasks.<service>`` name or a Kubernetes headless Service)."""
    resolve_interval: float = defaults.RESOLVE_INTERVAL
    """With ``all_addresses``: seconds between two lookups of ``hostname``."""
    stream_window: int = defaults.STREAM_WINDOW
    """The most this SP grants a stream the SC opens (the smaller of this and the SC's ask)."""


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    path: Path
    pipes: tuple[PipeConfig, ...] = field(default_factory=tuple)
    admin: AdminConfig | None = None
    shutdown_grace: float = defaults.SHUTDOWN_GRACE
    """Seconds open streams may take to finish on SIGTERM (or when a reload removes
    their pipe) before they are cut."""
    limits: PipeLimits = PipeLimits()
