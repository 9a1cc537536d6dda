"""Load consumer.xml and provider.xml with lxml, validated against the shipped XSDs.

Every error names the file, the line and what is wrong. Environment
variables override the token for containers:

- ``EDGERQ_AUTH_TOKEN``: the token itself;
- ``EDGERQ_AUTH_TOKEN_FILE``: a file whose content (whitespace stripped) is the token.

Reading the file as XML (size bound, no DOCTYPE, the XSDs) is ``xmlfile``'s.
It is one of the two modules over 400 lines: it is the one reader of both
schemas, element by element, and the cross-element checks the XSDs cannot
express (duplicate ports, carrier cardinality, certificates a carrier needs)
sit next to the elements they check.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from lxml import etree

from edgerq import defaults
from edgerq.config import xmlfile as xml
from edgerq.config.model import (
    AdminConfig,
    Carrier,
    ConsumerConfig,
    ConsumerService,
    ListenerConfig,
    Network,
    PipeConfig,
    PipeLimits,
    ProviderConfig,
    ProviderService,
    Secret,
    ServiceType,
)
from edgerq.config.tls import normalize_fingerprint
from edgerq.errors import ConfigError


def _carriers() -> frozenset[str]:
    try:
        import qh3  # noqa: F401
    except ImportError:
        return frozenset({"tcp"})
    return frozenset({"tcp", "udp"})


SUPPORTED_CARRIERS: frozenset[str] = _carriers()
SINGLE_ROOT_CHILDREN = (
    "admin",
    "max_connections",
    "request_buffer",
    "request_ttl",
    "stream_window",
    "shutdown_grace",
    "access_log",
    "auth_token",
    "idle_timeout",
    "connections_per_source",
    "waiting_per_source",
    "trusted_sources",
    "header_timeout",
    "min_rate",
    "rate_window",
    "listen_backlog",
    "limits",
    "services",
)
ROOTS = {"service_consumer": "consumer", "service_provider": "provider"}


def _bind_address(path: Path, elem: etree._Element) -> str | None:
    """``<bind_address>``: one IP address to listen on; it replaces ``<inaddr_any>``,
    so both together are refused rather than one silently winning."""
    text = xml.text_of(elem, "bind_address")
    if text is None:
        return None
    line = xml.line_of(elem, "bind_address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(
            f"{path}:{line}: <bind_address> must be an IP address (IPv4 or IPv6), not {text!r}"
        ) from None
    if xml.yes(xml.text_of(elem, "inaddr_any")):
        raise ConfigError(
            f"{path}:{line}: <bind_address> and <inaddr_any>yes</inaddr_any> contradict "
            "each other: keep one"
        )
    return str(address)


def _proxy_protocol(value: str | None) -> int | None:
    """``v1``/``v2`` (the XSD allows nothing else) as the version number."""
    return None if value is None else int(value.removeprefix("v"))


def _env_token(
    path: Path, configured: str | None, env: Mapping[str, str]
) -> tuple[Secret | None, str]:
    if env.get("EDGERQ_AUTH_TOKEN"):
        return Secret(env["EDGERQ_AUTH_TOKEN"]), "EDGERQ_AUTH_TOKEN"
    token_file = env.get("EDGERQ_AUTH_TOKEN_FILE")
    if token_file:
        try:
            value = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"{path}: EDGERQ_AUTH_TOKEN_FILE={token_file}: cannot read: {exc.strerror or exc}"
            ) from exc
        if not value:
            raise ConfigError(f"{path}: EDGERQ_AUTH_TOKEN_FILE={token_file} is empty")
        return Secret(value), "EDGERQ_AUTH_TOKEN_FILE"
    if configured:
        return Secret(configured), "config"
    return None, "none"


def _check_carrier(path: Path, elem: etree._Element) -> Carrier:
    value = xml.text_of(elem, "protocol") or "tcp"
    if value not in SUPPORTED_CARRIERS:
        line = cast(etree._Element, elem.find("protocol")).sourceline
        raise ConfigError(
            f"{path}:{line}: protocol '{value}' is not available in this build "
            f"(supported: {', '.join(sorted(SUPPORTED_CARRIERS))}; udp needs qh3)"
        )
    return cast(Carrier, value)


def _path(config_path: Path, value: str | None) -> Path | None:
    if not value:
        return None
    candidate = Path(value)
    return candidate if candidate.is_absolute() else config_path.parent / candidate


def _check_root_cardinality(path: Path, root: etree._Element) -> None:
    for name in SINGLE_ROOT_CHILDREN:
        found = root.findall(name)
        if len(found) > 1:
            raise ConfigError(
                f"{path}:{found[1].sourceline}: <{name}> given twice "
                f"(first at line {found[0].sourceline})"
            )
    listeners = root.findall("listener")
    if not listeners:
        raise ConfigError(
            f"{path}:{root.sourceline}: Element 'service_consumer': missing required "
            "element(s) <listener>"
        )
    seen: dict[str, int] = {}
    for elem in listeners:
        carrier = xml.text_of(elem, "protocol") or "tcp"
        if carrier in seen:
            raise ConfigError(
                f"{path}:{elem.sourceline}: a second <listener> for protocol {carrier} "
                f"(first at line {seen[carrier]}); give one listener per carrier"
            )
        seen[carrier] = int(cast(int | None, elem.sourceline) or 0)


def _admin(path: Path, root: etree._Element, used_ports: dict[int, int]) -> AdminConfig | None:
    elem = root.find("admin")
    if elem is None:
        return None
    port = int(cast(str, xml.text_of(elem, "port")))
    if port and port in used_ports:  # 0: each gets its own free port
        raise ConfigError(
            f"{path}:{xml.line_of(elem, 'port')}: duplicate port: {port} is already used "
            f"at line {used_ports[port]}"
        )
    return AdminConfig(
        port=port,
        inaddr_any=xml.yes(xml.text_of(elem, "inaddr_any")),
        bind_address=_bind_address(path, elem),
    )


def _seconds(value: str | None) -> float | None:
    return float(Decimal(value)) if value else None


def _trusted_sources(path: Path, root: etree._Element) -> tuple[Network, ...]:
    """``<trusted_sources>``: addresses or networks (CIDR), separated by spaces or commas."""
    text = xml.text_of(root, "trusted_sources")
    if not text:
        return ()
    networks = []
    for word in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise ConfigError(
                f"{path}:{xml.line_of(root, 'trusted_sources')}: <trusted_sources>: {word!r} is "
                "not an IP address or network (e.g. 10.0.0.5 or 172.16.0.0/12)"
            ) from None
    return tuple(networks)


def _fairness(elem: etree._Element, inherited: dict[str, Any]) -> dict[str, Any]:
    """The fair-port knobs of ``elem`` (the root or a service), over ``inherited``."""
    values = dict(inherited)
    for name in ("connections_per_source", "waiting_per_source"):
        text = xml.text_of(elem, name)
        if text:
            values[name] = int(text)
    header = xml.text_of(elem, "header_timeout")
    if header:
        values["header_timeout"] = float(Decimal(header)) or None  # 0: no deadline
    for name in ("min_rate", "rate_window"):
        text = xml.text_of(elem, name)
        if text:
            values[name] = float(Decimal(text))
    return values


def _limits(root: etree._Element) -> PipeLimits:
    """``<limits>``: every child optional, each absent one keeps its default."""
    elem = root.find("limits")
    if elem is None:
        return PipeLimits()
    values: dict[str, float | int] = {}
    for name, kind in (
        ("auth_failures", int),
        ("auth_window", float),
        ("auth_block", float),
        ("tracked_sources", int),
        ("unauthenticated_pipes", int),
        ("handshake_timeout", float),
        ("control_backlog", int),
        ("streams_per_pipe", int),
        ("pipe_buffer", int),
    ):
        text = xml.text_of(elem, name)
        if text:
            values[name] = float(Decimal(text)) if kind is float else int(text)
    return PipeLimits(**values)  # type: ignore[arg-type]


def _listener(path: Path, elem: etree._Element) -> ListenerConfig:
    protocol = _check_carrier(path, elem)
    certificate = _path(path, xml.text_of(elem, "certificate"))
    private_key = _path(path, xml.text_of(elem, "private_key"))
    if (certificate is None) != (private_key is None):
        raise ConfigError(f"{path}:{elem.sourceline}: <certificate> and <private_key> go together")
    if protocol == "udp" and certificate is None:
        certificate = path.parent / "edgerq-sc-cert.pem"
        private_key = path.parent / "edgerq-sc-key.pem"
    return ListenerConfig(
        port=int(cast(str, xml.text_of(elem, "port"))),
        inaddr_any=xml.yes(xml.text_of(elem, "inaddr_any")),
        protocol=protocol,
        certificate=certificate,
        private_key=private_key,
        bind_address=_bind_address(path, elem),
    )


def _root(path: Path, tag: str, schema: str) -> etree._Element:
    """The file's root element, parsed and validated against ``schema``'s XSD."""
    tree = xml.parse(path)
    root = tree.getroot()
    if root.tag != tag:
        raise ConfigError(
            f"{path}:{root.sourceline}: root element is <{root.tag}>, expected <{tag}>"
        )
    xml.validate(path, tree, schema)
    return root


def load_consumer(path: Path, env: Mapping[str, str] | None = None) -> ConsumerConfig:
    path = Path(path)
    root = _root(path, "service_consumer", "consumer")
    env = os.environ if env is None else env
    _check_root_cardinality(path, root)
    listeners = []
    used_ports: dict[int, int] = {}
    for elem in root.iterfind("listener"):
        listener = _listener(path, elem)
        listeners.append(listener)
        used_ports.setdefault(listener.port, xml.line_of(elem, "port"))
    inherited = _ServiceDefaults.of(path, root)
    seen_uuids: dict[uuid.UUID, int] = {}
    services = []
    for elem in root.iterfind("services/service"):
        uuid_line = xml.line_of(elem, "uuid")
        port_line = xml.line_of(elem, "port")
        service = inherited.service(path, elem)
        if service.uuid in seen_uuids:
            raise ConfigError(
                f"{path}:{uuid_line}: duplicate service uuid {service.uuid} "
                f"(first at line {seen_uuids[service.uuid]})"
            )
        if service.port and service.port in used_ports:  # 0: each gets its own free port
            raise ConfigError(
                f"{path}:{port_line}: duplicate port: {service.port} is already used "
                f"at line {used_ports[service.port]}"
            )
        seen_uuids[service.uuid] = uuid_line
        used_ports[service.port] = port_line
        services.append(service)
    token, source = _env_token(path, xml.text_of(root, "auth_token"), env)
    return ConsumerConfig(
        path,
        tuple(listeners),
        tuple(services),
        token,
        source,
        _admin(path, root, used_ports),
        shutdown_grace=_shutdown_grace(root),
        limits=_limits(root),
        access_log=xml.yes(xml.text_of(root, "access_log")),
    )


@dataclass(frozen=True)
class _ServiceDefaults:
    """What a ``<service>`` of consumer.xml inherits from the root when it says nothing."""

    max_connections: int
    request_buffer: int
    request_ttl: float
    stream_window: int
    idle_timeout: float | None
    listen_backlog: int
    fairness: dict[str, Any]

    @classmethod
    def of(cls, path: Path, root: etree._Element) -> _ServiceDefaults:
        return cls(
            max_connections=int(xml.text_of(root, "max_connections") or defaults.MAX_CONNECTIONS),
            request_buffer=int(xml.text_of(root, "request_buffer") or defaults.REQUEST_BUFFER),
            request_ttl=float(Decimal(xml.text_of(root, "request_ttl") or defaults.REQUEST_TTL)),
            stream_window=int(xml.text_of(root, "stream_window") or defaults.STREAM_WINDOW),
            idle_timeout=_seconds(xml.text_of(root, "idle_timeout")),
            listen_backlog=int(xml.text_of(root, "listen_backlog") or defaults.LISTEN_BACKLOG),
            fairness=_fairness(root, {"trusted_sources": _trusted_sources(path, root)}),
        )

    def service(self, path: Path, elem: etree._Element) -> ConsumerService:
        service_uuid = uuid.UUID(cast(str, xml.text_of(elem, "uuid")))
        ttl = xml.text_of(elem, "request_ttl")
        return ConsumerService(
            uuid=service_uuid,
            name=xml.text_of(elem, "name") or str(service_uuid),
            port=int(cast(str, xml.text_of(elem, "port"))),
            inaddr_any=xml.yes(xml.text_of(elem, "inaddr_any")),
            max_connections=int(xml.text_of(elem, "max_connections") or self.max_connections),
            request_buffer=int(xml.text_of(elem, "request_buffer") or self.request_buffer),
            request_ttl=float(Decimal(ttl)) if ttl else self.request_ttl,
            stream_window=int(xml.text_of(elem, "stream_window") or self.stream_window),
            type=cast(ServiceType, xml.text_of(elem, "type") or "tcp"),
            idle_timeout=_seconds(xml.text_of(elem, "idle_timeout")) or self.idle_timeout,
            listen_backlog=int(xml.text_of(elem, "listen_backlog") or self.listen_backlog),
            bind_address=_bind_address(path, elem),
            **_fairness(elem, self.fairness),
        )


def load_provider(path: Path, env: Mapping[str, str] | None = None) -> ProviderConfig:
    path = Path(path)
    root = _root(path, "service_provider", "provider")
    env = os.environ if env is None else env
    pipes = []
    pipe_names: dict[str, int] = {}
    default_window = int(xml.text_of(root, "stream_window") or defaults.STREAM_WINDOW)
    for index, pipe_elem in enumerate(root.iterfind("pipes/pipe"), start=1):
        pipe = _pipe(path, pipe_elem, f"pipe{index}", default_window, env)
        if pipe.name in pipe_names:
            raise ConfigError(
                f"{path}:{xml.line_of(pipe_elem, 'name')}: duplicate pipe name '{pipe.name}' "
                f"(first at line {pipe_names[pipe.name]})"
            )
        pipe_names[pipe.name] = xml.line_of(pipe_elem, "name")
        pipes.append(pipe)
    return ProviderConfig(
        path,
        tuple(pipes),
        _admin(path, root, {}),
        shutdown_grace=_shutdown_grace(root),
        limits=_limits(root),
    )


def _pipe(
    path: Path,
    elem: etree._Element,
    default_name: str,
    default_window: int,
    env: Mapping[str, str],
) -> PipeConfig:
    name = xml.text_of(elem, "name") or default_name
    token, source = _env_token(path, xml.text_of(elem, "auth_token"), env)
    protocol = _check_carrier(path, elem)
    ca_file = _path(path, xml.text_of(elem, "ca_file"))
    pin = _server_pin(path, elem)
    insecure = xml.yes(xml.text_of(elem, "insecure"))
    if protocol == "udp" and not (ca_file or pin or insecure):
        raise ConfigError(
            f"{path}:{xml.line_of(elem, 'protocol')}: udp pipe '{name}' must verify the SC: "
            "set <server_fingerprint> (edgerq fingerprint consumer.xml prints it) or "
            "<ca_file>, or accept any certificate with <insecure>yes</insecure>"
        )
    return PipeConfig(
        name=name,
        hostname=cast(str, xml.text_of(elem, "hostname")),
        port=int(cast(str, xml.text_of(elem, "port"))),
        services=_provider_services(path, elem, name),
        protocol=protocol,
        auth_token=token,
        token_source=source,
        ca_file=ca_file,
        server_fingerprint=pin,
        server_name=xml.text_of(elem, "server_name") or None,
        insecure=insecure,
        all_addresses=xml.yes(xml.text_of(elem, "all_addresses")),
        resolve_interval=float(
            Decimal(xml.text_of(elem, "resolve_interval") or defaults.RESOLVE_INTERVAL)
        ),
        stream_window=int(xml.text_of(elem, "stream_window") or default_window),
    )


def _provider_services(
    path: Path, pipe_elem: etree._Element, pipe_name: str
) -> tuple[ProviderService, ...]:
    seen: dict[uuid.UUID, int] = {}
    services = []
    for elem in pipe_elem.iterfind("services/service"):
        line = xml.line_of(elem, "uuid")
        service_uuid = uuid.UUID(cast(str, xml.text_of(elem, "uuid")))
        if service_uuid in seen:
            raise ConfigError(
                f"{path}:{line}: duplicate service uuid {service_uuid} in "
                f"pipe '{pipe_name}' (first at line {seen[service_uuid]})"
            )
        seen[service_uuid] = line
        services.append(
            ProviderService(
                uuid=service_uuid,
                name=xml.text_of(elem, "name") or str(service_uuid),
                hostname=cast(str, xml.text_of(elem, "hostname")),
                port=int(cast(str, xml.text_of(elem, "port"))),
                proxy_protocol=_proxy_protocol(xml.text_of(elem, "proxy_protocol")),
                idle_timeout=_seconds(xml.text_of(elem, "idle_timeout")),
            )
        )
    return tuple(services)


def _server_pin(path: Path, pipe_elem: etree._Element) -> str | None:
    """``<server_fingerprint>`` normalized (colons, case), or None."""
    pin = xml.text_of(pipe_elem, "server_fingerprint")
    if not pin:
        return None
    try:
        return normalize_fingerprint(pin)
    except ValueError as exc:
        raise ConfigError(f"{path}:{xml.line_of(pipe_elem, 'server_fingerprint')}: {exc}") from exc


def _shutdown_grace(root: etree._Element) -> float:
    return float(Decimal(xml.text_of(root, "shutdown_grace") or defaults.SHUTDOWN_GRACE))


def load_any(path: Path, env: Mapping[str, str] | None = None) -> ConsumerConfig | ProviderConfig:
    """Load either kind of file, chosen by its root element."""
    path = Path(path)
    root = xml.parse(path).getroot()
    kind = ROOTS.get(str(root.tag))
    if kind == "consumer":
        return load_consumer(path, env)
    if kind == "provider":
        return load_provider(path, env)
    raise ConfigError(
        f"{path}:{root.sourceline}: root element is <{root.tag}>, expected "
        "<service_consumer> or <service_provider>"
    )
