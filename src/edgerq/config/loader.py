"""Load consumer.xml and provider.xml with lxml, validated against the shipped XSDs.

Every error names the file, the line and what is wrong. Environment
variables override the token for containers:

- ``EDGERQ_AUTH_TOKEN``: the token itself;
- ``EDGERQ_AUTH_TOKEN_FILE``: a file whose content (whitespace stripped) is the token.
"""

from __future__ import annotations

import ipaddress
import os
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from lxml import etree

from edgerq import defaults
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


XS = {"xs": "http://www.w3.org/2001/XMLSchema"}


@cache
def _schema_doc(kind: str) -> etree._Element:
    text = resources.files("edgerq.config").joinpath(f"{kind}.xsd").read_bytes()
    return etree.fromstring(text)


@cache
def _schema(kind: str) -> etree.XMLSchema:
    return etree.XMLSchema(_schema_doc(kind))


def _missing_children(tree: etree._ElementTree, kind: str, xpath: str | None) -> list[str]:
    """Required children absent from the element at ``xpath``.

    libxml2 reports a missing child of an ``xs:all`` group by listing every
    child not seen yet, optional ones included; this names the required ones.
    """
    if not xpath:
        return []
    nodes = tree.xpath(xpath)
    if not isinstance(nodes, list) or len(nodes) != 1:
        return []
    node = nodes[0]
    if not isinstance(node, etree._Element):
        return []
    required = _schema_doc(kind).xpath(
        "//xs:element[@name=$tag]/xs:complexType/*/xs:element[not(@minOccurs='0')]/@name",
        namespaces=XS,
        tag=str(node.tag),
    )
    if not isinstance(required, list):
        return []
    return [str(name) for name in required if node.find(str(name)) is None]


MAX_CONFIG_BYTES = 1024 * 1024
"""A config file larger than this is refused before it is parsed. The largest
real configs are a few KiB; a 1 MiB file still holds thousands of services."""


def _parse(path: Path) -> etree._ElementTree:
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"{path}: larger than {MAX_CONFIG_BYTES} bytes, the most a config file may be; "
            "not parsed"
        )
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True
    )
    try:
        root = etree.fromstring(data, parser, base_url=str(path))
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        raise ConfigError(f"{path}:{line}: not well-formed XML: {exc.msg}") from exc
    tree = etree.ElementTree(root)
    if tree.docinfo.internalDTD is not None:  # any <!DOCTYPE>, with or without a subset
        line = data.count(b"\n", 0, max(data.find(b"<!DOCTYPE"), 0)) + 1
        raise ConfigError(
            f"{path}:{line}: a DOCTYPE is not allowed in a config file "
            "(edgerq reads no DTD and expands no entities)"
        )
    return tree


def _validate(path: Path, tree: etree._ElementTree, kind: str) -> None:
    # Entities are not expanded (no external files are read); an entity left in
    # the tree would make libxml2's validator fail with an internal error.
    for entity in tree.iter(etree.Entity):
        line = int(cast(int | None, entity.sourceline) or 0)
        raise ConfigError(f"{path}:{line}: entity reference {entity.text} is not allowed")
    schema = _schema(kind)
    try:
        valid = schema.validate(tree)
    except etree.Error as exc:
        raise ConfigError(f"{path}: cannot validate: {exc}") from exc
    if valid:
        return
    problems = []
    for err in cast(Iterable[Any], schema.error_log):
        message = err.message
        if "Missing child element" in message:
            missing = _missing_children(tree, kind, err.path)
            if missing:
                names = ", ".join(f"<{name}>" for name in missing)
                tag = message.split("'")[1] if message.count("'") >= 2 else "element"
                message = f"Element '{tag}': missing required element(s) {names}"
        problems.append(f"{path}:{err.line}: {message}")
    raise ConfigError("\n".join(problems))


def _text(elem: etree._Element, name: str) -> str | None:
    child = elem.find(name)
    if child is None:
        return None
    return (child.text or "").strip()


def _line(elem: etree._Element, name: str) -> int:
    """Line of ``elem``'s child ``name`` (of ``elem`` itself when absent)."""
    child = elem.find(name)
    line = (child if child is not None else elem).sourceline
    return int(cast(int | None, line) or 0)


def _yes(value: str | None) -> bool:
    return value in ("yes", "true", "1")


def _bind_address(path: Path, elem: etree._Element) -> str | None:
    """``<bind_address>``: one IP address to listen on; it replaces ``<inaddr_any>``,
    so both together are refused rather than one silently winning."""
    text = _text(elem, "bind_address")
    if text is None:
        return None
    line = _line(elem, "bind_address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ConfigError(
            f"{path}:{line}: <bind_address> must be an IP address (IPv4 or IPv6), not {text!r}"
        ) from None
    if _yes(_text(elem, "inaddr_any")):
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
    value = _text(elem, "protocol") or "tcp"
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
        carrier = _text(elem, "protocol") or "tcp"
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
    port = int(cast(str, _text(elem, "port")))
    if port and port in used_ports:  # 0: each gets its own free port
        raise ConfigError(
            f"{path}:{_line(elem, 'port')}: duplicate port: {port} is already used "
            f"at line {used_ports[port]}"
        )
    return AdminConfig(
        port=port,
        inaddr_any=_yes(_text(elem, "inaddr_any")),
        bind_address=_bind_address(path, elem),
    )


def _seconds(value: str | None) -> float | None:
    return float(Decimal(value)) if value else None


def _trusted_sources(path: Path, root: etree._Element) -> tuple[Network, ...]:
    """``<trusted_sources>``: addresses or networks (CIDR), separated by spaces or commas."""
    text = _text(root, "trusted_sources")
    if not text:
        return ()
    networks = []
    for word in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(word, strict=False))
        except ValueError:
            raise ConfigError(
                f"{path}:{_line(root, 'trusted_sources')}: <trusted_sources>: {word!r} is "
                "not an IP address or network (e.g. 10.0.0.5 or 172.16.0.0/12)"
            ) from None
    return tuple(networks)


def _fairness(elem: etree._Element, inherited: dict[str, Any]) -> dict[str, Any]:
    """The fair-port knobs of ``elem`` (the root or a service), over ``inherited``."""
    values = dict(inherited)
    for name in ("connections_per_source", "waiting_per_source"):
        text = _text(elem, name)
        if text:
            values[name] = int(text)
    header = _text(elem, "header_timeout")
    if header:
        values["header_timeout"] = float(Decimal(header)) or None  # 0: no deadline
    for name in ("min_rate", "rate_window"):
        text = _text(elem, name)
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
        text = _text(elem, name)
        if text:
            values[name] = float(Decimal(text)) if kind is float else int(text)
    return PipeLimits(**values)  # type: ignore[arg-type]


def _listener(path: Path, elem: etree._Element) -> ListenerConfig:
    protocol = _check_carrier(path, elem)
    certificate = _path(path, _text(elem, "certificate"))
    private_key = _path(path, _text(elem, "private_key"))
    if (certificate is None) != (private_key is None):
        raise ConfigError(f"{path}:{elem.sourceline}: <certificate> and <private_key> go together")
    if protocol == "udp" and certificate is None:
        certificate = path.parent / "edgerq-sc-cert.pem"
        private_key = path.parent / "edgerq-sc-key.pem"
    return ListenerConfig(
        port=int(cast(str, _text(elem, "port"))),
        inaddr_any=_yes(_text(elem, "inaddr_any")),
        protocol=protocol,
        certificate=certificate,
        private_key=private_key,
        bind_address=_bind_address(path, elem),
    )


def load_consumer(path: Path, env: Mapping[str, str] | None = None) -> ConsumerConfig:
    path = Path(path)
    tree = _parse(path)
    root = tree.getroot()
    if root.tag != "service_consumer":
        raise ConfigError(
            f"{path}:{root.sourceline}: root element is <{root.tag}>, expected <service_consumer>"
        )
    _validate(path, tree, "consumer")
    env = os.environ if env is None else env

    default_max = int(_text(root, "max_connections") or defaults.MAX_CONNECTIONS)
    default_buffer = int(_text(root, "request_buffer") or defaults.REQUEST_BUFFER)
    default_ttl = float(Decimal(_text(root, "request_ttl") or defaults.REQUEST_TTL))
    default_window = int(_text(root, "stream_window") or defaults.STREAM_WINDOW)
    default_idle = _seconds(_text(root, "idle_timeout"))
    default_fairness = _fairness(root, {"trusted_sources": _trusted_sources(path, root)})
    default_backlog = int(_text(root, "listen_backlog") or defaults.LISTEN_BACKLOG)

    _check_root_cardinality(path, root)
    listeners = []
    used_ports: dict[int, int] = {}
    for elem in root.iterfind("listener"):
        listener = _listener(path, elem)
        listeners.append(listener)
        used_ports.setdefault(listener.port, _line(elem, "port"))
    seen_uuids: dict[uuid.UUID, int] = {}
    services = []
    for elem in root.iterfind("services/service"):
        uuid_line = _line(elem, "uuid")
        port_line = _line(elem, "port")
        service_uuid = uuid.UUID(cast(str, _text(elem, "uuid")))
        port = int(cast(str, _text(elem, "port")))
        if service_uuid in seen_uuids:
            raise ConfigError(
                f"{path}:{uuid_line}: duplicate service uuid {service_uuid} "
                f"(first at line {seen_uuids[service_uuid]})"
            )
        if port and port in used_ports:  # 0: each gets its own free port
            raise ConfigError(
                f"{path}:{port_line}: duplicate port: {port} is already used "
                f"at line {used_ports[port]}"
            )
        seen_uuids[service_uuid] = uuid_line
        used_ports[port] = port_line
        ttl = _text(elem, "request_ttl")
        services.append(
            ConsumerService(
                uuid=service_uuid,
                name=_text(elem, "name") or str(service_uuid),
                port=port,
                inaddr_any=_yes(_text(elem, "inaddr_any")),
                max_connections=int(_text(elem, "max_connections") or default_max),
                request_buffer=int(_text(elem, "request_buffer") or default_buffer),
                request_ttl=float(Decimal(ttl)) if ttl else default_ttl,
                stream_window=int(_text(elem, "stream_window") or default_window),
                type=cast(ServiceType, _text(elem, "type") or "tcp"),
                idle_timeout=_seconds(_text(elem, "idle_timeout")) or default_idle,
                listen_backlog=int(_text(elem, "listen_backlog") or default_backlog),
                bind_address=_bind_address(path, elem),
                **_fairness(elem, default_fairness),
            )
        )
    token, source = _env_token(path, _text(root, "auth_token"), env)
    return ConsumerConfig(
        path,
        tuple(listeners),
        tuple(services),
        token,
        source,
        _admin(path, root, used_ports),
        shutdown_grace=_shutdown_grace(root),
        limits=_limits(root),
    )


def load_provider(path: Path, env: Mapping[str, str] | None = None) -> ProviderConfig:
    path = Path(path)
    tree = _parse(path)
    root = tree.getroot()
    if root.tag != "service_provider":
        raise ConfigError(
            f"{path}:{root.sourceline}: root element is <{root.tag}>, expected <service_provider>"
        )
    _validate(path, tree, "provider")
    env = os.environ if env is None else env

    pipes = []
    pipe_names: dict[str, int] = {}
    default_window = int(_text(root, "stream_window") or defaults.STREAM_WINDOW)
    for index, pipe_elem in enumerate(root.iterfind("pipes/pipe"), start=1):
        pipe_line = _line(pipe_elem, "name")
        name = _text(pipe_elem, "name") or f"pipe{index}"
        if name in pipe_names:
            raise ConfigError(
                f"{path}:{pipe_line}: duplicate pipe name '{name}' "
                f"(first at line {pipe_names[name]})"
            )
        pipe_names[name] = pipe_line
        seen: dict[uuid.UUID, int] = {}
        services = []
        for elem in pipe_elem.iterfind("services/service"):
            line = _line(elem, "uuid")
            service_uuid = uuid.UUID(cast(str, _text(elem, "uuid")))
            if service_uuid in seen:
                raise ConfigError(
                    f"{path}:{line}: duplicate service uuid {service_uuid} in "
                    f"pipe '{name}' (first at line {seen[service_uuid]})"
                )
            seen[service_uuid] = line
            services.append(
                ProviderService(
                    uuid=service_uuid,
                    name=_text(elem, "name") or str(service_uuid),
                    hostname=cast(str, _text(elem, "hostname")),
                    port=int(cast(str, _text(elem, "port"))),
                    proxy_protocol=_proxy_protocol(_text(elem, "proxy_protocol")),
                    idle_timeout=_seconds(_text(elem, "idle_timeout")),
                )
            )
        token, source = _env_token(path, _text(pipe_elem, "auth_token"), env)
        protocol = _check_carrier(path, pipe_elem)
        ca_file = _path(path, _text(pipe_elem, "ca_file"))
        pin = _text(pipe_elem, "server_fingerprint")
        insecure = _yes(_text(pipe_elem, "insecure"))
        if pin:
            from edgerq.tls import normalize_fingerprint

            try:
                pin = normalize_fingerprint(pin)
            except ValueError as exc:
                raise ConfigError(
                    f"{path}:{_line(pipe_elem, 'server_fingerprint')}: {exc}"
                ) from exc
        if protocol == "udp" and not (ca_file or pin or insecure):
            raise ConfigError(
                f"{path}:{_line(pipe_elem, 'protocol')}: udp pipe '{name}' must verify the SC: "
                "set <server_fingerprint> (edgerq fingerprint consumer.xml prints it) or "
                "<ca_file>, or accept any certificate with <insecure>yes</insecure>"
            )
        pipes.append(
            PipeConfig(
                name=name,
                hostname=cast(str, _text(pipe_elem, "hostname")),
                port=int(cast(str, _text(pipe_elem, "port"))),
                services=tuple(services),
                protocol=protocol,
                auth_token=token,
                token_source=source,
                ca_file=ca_file,
                server_fingerprint=pin or None,
                server_name=_text(pipe_elem, "server_name") or None,
                insecure=insecure,
                all_addresses=_yes(_text(pipe_elem, "all_addresses")),
                resolve_interval=float(
                    Decimal(_text(pipe_elem, "resolve_interval") or defaults.RESOLVE_INTERVAL)
                ),
                stream_window=int(_text(pipe_elem, "stream_window") or default_window),
            )
        )
    return ProviderConfig(
        path,
        tuple(pipes),
        _admin(path, root, {}),
        shutdown_grace=_shutdown_grace(root),
        limits=_limits(root),
    )


def _shutdown_grace(root: etree._Element) -> float:
    return float(Decimal(_text(root, "shutdown_grace") or defaults.SHUTDOWN_GRACE))


def load_any(path: Path, env: Mapping[str, str] | None = None) -> ConsumerConfig | ProviderConfig:
    """Load either kind of file, chosen by its root element."""
    path = Path(path)
    root = _parse(path).getroot()
    kind = ROOTS.get(str(root.tag))
    if kind == "consumer":
        return load_consumer(path, env)
    if kind == "provider":
        return load_provider(path, env)
    raise ConfigError(
        f"{path}:{root.sourceline}: root element is <{root.tag}>, expected "
        "<service_consumer> or <service_provider>"
    )
