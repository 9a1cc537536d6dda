"""``describe``: what a config file will do, in words (``edgerq check``'s report), and
never a token."""

from __future__ import annotations

import ipaddress
import uuid
from pathlib import Path

import pytest

from edgerq.config import (
    ConsumerConfig,
    ProviderConfig,
    Secret,
    load_any,
)
from edgerq.config.describe import describe
from edgerq.config.model import (
    ConsumerService,
    ListenerConfig,
    PipeConfig,
    PipeLimits,
    ProviderService,
)

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parents[1] / "data"
CONSUMER_TOKEN = "consumer-secret-4f1a"
PROVIDER_TOKEN = "provider-secret-9b2c"
NO_ENV: dict[str, str] = {}
UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def shipped_samples() -> list[Path]:
    return sorted([*ROOT.glob("sc/*.xml"), *ROOT.glob("sp/*.xml")])


@pytest.mark.parametrize("path", shipped_samples(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_sample_is_described(path: Path) -> None:
    config = load_any(path, env=NO_ENV)
    lines = describe(config).split("\n")
    role = "service consumer (SC)" if path.parent.name == "sc" else "service provider (SP)"
    assert lines[0] == f"{path}: {role}"
    services = (
        config.services
        if isinstance(config, ConsumerConfig)
        else [s for pipe in config.pipes for s in pipe.services]
    )
    for service in services:
        assert sum(f"service '{service.name}' {service.uuid}" in line for line in lines) == 1


@pytest.mark.parametrize("name", ["consumer_full.xml", "provider_full.xml"])
def test_tokens_never_show_in_describe(name: str) -> None:
    config = load_any(DATA / name, env=NO_ENV)
    env_config = load_any(DATA / name, env={"EDGERQ_AUTH_TOKEN": "env-token-31337"})
    for cfg in (config, env_config):
        text = describe(cfg)
        assert CONSUMER_TOKEN not in text
        assert PROVIDER_TOKEN not in text
        assert "env-token-31337" not in text
    assert "token from" in describe(config)
    assert "token from EDGERQ_AUTH_TOKEN" in describe(env_config)


# --- the SC -----------------------------------------------------------------------------


def consumer(**fields: object) -> ConsumerConfig:
    values: dict[str, object] = {
        "path": Path("/etc/edgerq/consumer.xml"),
        "listeners": (ListenerConfig(port=12345),),
        "services": (ConsumerService(UUID, "web", 3000),),
    }
    values.update(fields)
    return ConsumerConfig(**values)  # type: ignore[arg-type]


def test_a_consumer_line_by_line() -> None:
    config = consumer(
        listeners=(ListenerConfig(port=12345, inaddr_any=True),),
        auth_token=Secret("s3cret"),
        token_source="EDGERQ_AUTH_TOKEN_FILE",
        limits=PipeLimits(
            auth_failures=3,
            auth_window=30,
            auth_block=120,
            unauthenticated_pipes=8,
            handshake_timeout=2.5,
            pipe_buffer=1048576,
        ),
    )
    assert describe(config) == (
        "/etc/edgerq/consumer.xml: service consumer (SC)\n"
        "  accepts pipes (tcp) on 0.0.0.0:12345\n"
        "  SP authentication: token from EDGERQ_AUTH_TOKEN_FILE\n"
        f"  service 'web' {UUID} (tcp) on 127.0.0.1:3000: max_connections 50, "
        "request_buffer 4096, request_ttl 3 s, stream_window 1048576\n"
        "    fair: 40 connection(s) and 1000 waiting per client address, no min_rate\n"
        "  limits: 3 failed authentications in 30 s block a source for 120 s; at most 8 "
        "pipes authenticating, each for 2.5 s; pipe_buffer 1048576"
    )
    assert "s3cret" not in describe(config)


def test_a_consumer_without_a_token_says_any_sp_may_register() -> None:
    lines = describe(consumer()).split("\n")
    assert lines[2] == "  SP authentication: none (any SP that reaches the listener may register)"


def test_a_consumer_without_services_says_so() -> None:
    lines = describe(consumer(services=())).split("\n")
    assert lines[3] == "  no services configured"
    assert lines[4].startswith("  limits: ")


def test_a_udp_listener_names_its_certificate() -> None:
    udp = ListenerConfig(
        port=4433,
        protocol="udp",
        certificate=Path("/secrets/sc-cert.pem"),
        private_key=Path("/secrets/sc-key.pem"),
        bind_address="192.0.2.10",
    )
    lines = describe(consumer(listeners=(ListenerConfig(port=12345), udp))).split("\n")
    assert lines[1:3] == [
        "  accepts pipes (tcp) on 127.0.0.1:12345",
        "  accepts pipes (udp) on 192.0.2.10:4433, certificate /secrets/sc-cert.pem",
    ]
    assert "sc-key.pem" not in describe(consumer(listeners=(udp,)))


def test_an_http_service_with_every_fair_port_knob() -> None:
    service = ConsumerService(
        UUID,
        "api",
        8080,
        type="http",
        max_connections=10,
        request_ttl=0.5,
        idle_timeout=60,
        connections_per_source=3,
        waiting_per_source=7,
        trusted_sources=(
            ipaddress.ip_network("10.0.0.0/8"),
            ipaddress.ip_network("2001:db8::/32"),
        ),
        header_timeout=2.5,
        min_rate=4,
        rate_window=20,
    )
    lines = describe(consumer(services=(service,))).split("\n")
    assert lines[3:5] == [
        f"  service 'api' {UUID} (http) on 127.0.0.1:8080: max_connections 10, "
        "request_buffer 4096, request_ttl 0.5 s, stream_window 1048576, idle_timeout 60 s",
        "    fair: 3 connection(s) and 7 waiting per client address (2 trusted network(s) "
        "exempt), request head within 2.5 s, min_rate 4 B/s over 20 s",
    ]


def test_no_head_deadline_for_tcp_or_without_header_timeout() -> None:
    for service in (
        ConsumerService(UUID, "t", 1, header_timeout=5),
        ConsumerService(UUID, "h", 1, type="http", header_timeout=None, min_rate=0),
    ):
        (fair,) = [
            line for line in describe(consumer(services=(service,))).split("\n") if "fair" in line
        ]
        assert fair == "    fair: 40 connection(s) and 1000 waiting per client address, no min_rate"


# --- the SP -----------------------------------------------------------------------------


def provider(*pipes: PipeConfig) -> ProviderConfig:
    return ProviderConfig(path=Path("/etc/edgerq/provider.xml"), pipes=pipes)


def pipe(**fields: object) -> PipeConfig:
    values: dict[str, object] = {
        "name": "to-sc",
        "hostname": "sc.example.net",
        "port": 4433,
        "services": (ProviderService(UUID, "web", "127.0.0.1", 8080),),
    }
    values.update(fields)
    return PipeConfig(**values)  # type: ignore[arg-type]


def test_a_provider_line_by_line() -> None:
    config = ProviderConfig(
        path=Path("/etc/edgerq/provider.xml"),
        pipes=(
            pipe(auth_token=Secret("s3cret"), token_source="config", stream_window=65536),
            pipe(name="second", port=12346),
        ),
        limits=PipeLimits(pipe_buffer=2097152),
    )
    assert describe(config) == (
        "/etc/edgerq/provider.xml: service provider (SP)\n"
        "  pipe 'to-sc' (tcp) to sc.example.net:4433, token from config, stream_window 65536, "
        "pipe_buffer 2097152\n"
        f"    service 'web' {UUID} -> 127.0.0.1:8080\n"
        "  pipe 'second' (tcp) to sc.example.net:12346, no token, stream_window 1048576, "
        "pipe_buffer 2097152\n"
        f"    service 'web' {UUID} -> 127.0.0.1:8080"
    )


@pytest.mark.parametrize(
    ("verify", "line"),
    [
        (
            {"server_fingerprint": "AB:CD:EF", "ca_file": Path("/ca.pem")},  # the pin wins
            "    SC certificate pinned to AB:CD:EF",
        ),
        (
            {"ca_file": Path("/secrets/ca.pem")},
            "    SC certificate verified against /secrets/ca.pem",
        ),
        ({"insecure": True}, "    SC certificate NOT verified (insecure)"),
    ],
    ids=["pinned", "ca_file", "insecure"],
)
def test_a_udp_pipe_says_how_the_sc_certificate_is_checked(
    verify: dict[str, object], line: str
) -> None:
    lines = describe(provider(pipe(protocol="udp", **verify))).split("\n")
    assert lines[1].startswith("  pipe 'to-sc' (udp) to sc.example.net:4433, no token")
    assert lines[2] == line
    assert lines[3].startswith("    service 'web' ")


def test_a_tcp_pipe_has_no_certificate_line() -> None:
    text = describe(provider(pipe(server_fingerprint="AB:CD")))
    assert "certificate" not in text and len(text.split("\n")) == 3


def test_proxy_protocol_is_described_per_service() -> None:
    services = tuple(
        ProviderService(
            uuid.UUID(f"11111111-2222-3333-4444-55555555555{index}"),
            f"svc{index}",
            "127.0.0.1",
            8080 + index,
            proxy_protocol=proxy,
        )
        for index, proxy in enumerate([None, 1, 2])
    )
    text = describe(provider(pipe(services=services)))
    assert "svc0' 11111111-2222-3333-4444-555555555550 -> 127.0.0.1:8080\n" in text + "\n"
    assert "-> 127.0.0.1:8081 (PROXY protocol v1)" in text
    assert "-> 127.0.0.1:8082 (PROXY protocol v2)" in text


def test_a_service_idle_timeout_follows_its_target() -> None:
    services = (
        ProviderService(UUID, "web", "127.0.0.1", 8080, proxy_protocol=2, idle_timeout=90.0),
        ProviderService(uuid.UUID(int=7), "db", "db.internal", 5432, idle_timeout=0.5),
    )
    lines = describe(provider(pipe(services=services))).split("\n")
    assert lines[2:] == [
        f"    service 'web' {UUID} -> 127.0.0.1:8080 (PROXY protocol v2), idle_timeout 90 s",
        f"    service 'db' {uuid.UUID(int=7)} -> db.internal:5432, idle_timeout 0.5 s",
    ]


def test_a_provider_without_pipes_is_one_line() -> None:
    assert describe(provider()) == "/etc/edgerq/provider.xml: service provider (SP)"
