"""Loading consumer.xml and provider.xml: samples, defaults, overrides, and bad input."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from edgerq import defaults
from edgerq.config import (
    ConsumerConfig,
    ProviderConfig,
    Secret,
    load_any,
    load_consumer,
    load_provider,
)
from edgerq.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parents[1] / "data"
BAD = DATA / "bad"

SAMPLE_UUID = uuid.UUID("11111111-2222-3333-4444-555555555555")
OTHER_UUID = uuid.UUID("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
CONSUMER_TOKEN = "consumer-secret-4f1a"
PROVIDER_TOKEN = "provider-secret-9b2c"
NO_ENV: dict[str, str] = {}

Loader = Callable[..., ConsumerConfig | ProviderConfig]


def consumer(name: str, env: dict[str, str] | None = None) -> ConsumerConfig:
    return load_consumer(DATA / name, env=NO_ENV if env is None else env)


def provider(name: str, env: dict[str, str] | None = None) -> ProviderConfig:
    return load_provider(DATA / name, env=NO_ENV if env is None else env)


# --- shipped samples ------------------------------------------------------------


def test_shipped_consumer_sample_has_the_original_values() -> None:
    config = load_consumer(ROOT / "sc" / "consumer.xml", env=NO_ENV)
    assert config.listener.port == 12345
    assert config.listener.inaddr_any is False
    assert config.listener.host == "127.0.0.1"
    assert config.listener.protocol == "tcp"
    assert config.auth_token is None
    assert config.token_source == "none"
    (service,) = config.services
    assert service.uuid == SAMPLE_UUID
    assert service.name == "name_of_service1"
    assert service.port == 3000
    assert service.host == "127.0.0.1"
    assert service.max_connections == 50
    assert service.request_buffer == 4096
    assert service.request_ttl == 3.0
    assert service.stream_window == defaults.STREAM_WINDOW
    assert service.type == "tcp"


def test_shipped_provider_sample_has_the_original_values() -> None:
    config = load_provider(ROOT / "sp" / "provider.xml", env=NO_ENV)
    (pipe,) = config.pipes
    assert (pipe.name, pipe.hostname, pipe.port, pipe.protocol) == (
        "pipe1",
        "127.0.0.1",
        12345,
        "tcp",
    )
    assert pipe.auth_token is None
    (service,) = pipe.services
    assert service.uuid == SAMPLE_UUID
    assert service.name == "name_of_service1"
    assert (service.hostname, service.port) == ("127.0.0.1", 3088)


def shipped_samples() -> list[Path]:
    return sorted([*ROOT.glob("sc/*.xml"), *ROOT.glob("sp/*.xml")])


def test_there_are_shipped_samples() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in shipped_samples()}
    assert {"sc/consumer.xml", "sp/provider.xml"} <= names


@pytest.mark.parametrize("path", shipped_samples(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_shipped_sample_loads(path: Path) -> None:
    config = load_any(path, env=NO_ENV)
    if path.parent.name == "sc":
        assert isinstance(config, ConsumerConfig)
        assert config.services
    else:
        assert isinstance(config, ProviderConfig)
        assert config.pipes and all(pipe.services for pipe in config.pipes)


def test_sc_and_sp_samples_agree_on_service_uuids() -> None:
    for sc_name, sp_name in [
        ("consumer.xml", "provider.xml"),
        ("consumer.compose.xml", "provider.compose.xml"),
    ]:
        sc_path, sp_path = ROOT / "sc" / sc_name, ROOT / "sp" / sp_name
        if not (sc_path.exists() and sp_path.exists()):
            continue
        sc = load_consumer(sc_path, env=NO_ENV)
        sp = load_provider(sp_path, env=NO_ENV)
        offered = {s.uuid for pipe in sp.pipes for s in pipe.services}
        assert offered <= {s.uuid for s in sc.services}


# --- values, defaults and overrides -------------------------------------------------


def test_services_inherit_the_defaults_and_may_override_them() -> None:
    config = consumer("consumer_full.xml")
    assert config.listener.inaddr_any is True
    assert config.listener.host == "0.0.0.0"
    inherits, overrides = config.services
    assert inherits.name == "inherits"
    assert (
        inherits.max_connections,
        inherits.request_buffer,
        inherits.request_ttl,
        inherits.stream_window,
        inherits.type,
        inherits.inaddr_any,
    ) == (100, 8192, 2.5, 2 * 1024 * 1024, "tcp", False)
    assert overrides.uuid == OTHER_UUID  # written in upper case in the file
    assert (
        overrides.max_connections,
        overrides.request_buffer,
        overrides.request_ttl,
        overrides.stream_window,
        overrides.type,
        overrides.inaddr_any,
    ) == (5, 1024, 0.5, 65536, "http", True)


def test_built_in_defaults_when_the_file_sets_none() -> None:
    config = consumer("consumer_minimal.xml")
    (service,) = config.services
    assert service.name == str(SAMPLE_UUID)
    assert service.max_connections == defaults.MAX_CONNECTIONS == 50
    assert service.request_buffer == defaults.REQUEST_BUFFER == 4096
    assert service.request_ttl == defaults.REQUEST_TTL
    assert service.stream_window == defaults.STREAM_WINDOW == 1024 * 1024
    assert service.type == "tcp"
    assert config.listener.protocol == "tcp"


def test_provider_values_and_default_pipe_names() -> None:
    config = provider("provider_full.xml")
    first, second = config.pipes
    assert (first.name, first.hostname, first.port) == ("to-sc1", "sc1.example.net", 12345)
    assert first.auth_token == Secret(PROVIDER_TOKEN)
    assert first.token_source == "config"
    assert [(s.uuid, s.name, s.hostname, s.port) for s in first.services] == [
        (SAMPLE_UUID, "web", "127.0.0.1", 8080),
        (OTHER_UUID, str(OTHER_UUID), "db.internal", 5432),
    ]
    assert second.name == "pipe2"
    assert second.auth_token is None
    # The same UUID may be offered on two pipes (to two SCs).
    assert second.services[0].uuid == SAMPLE_UUID


@pytest.mark.parametrize(
    ("ordered", "reordered", "load"),
    [
        ("consumer_full.xml", "consumer_reordered.xml", load_consumer),
        ("provider_full.xml", "provider_reordered.xml", load_provider),
    ],
)
def test_element_order_does_not_matter(ordered: str, reordered: str, load: Loader) -> None:
    a = load(DATA / ordered, env=NO_ENV)
    b = load(DATA / reordered, env=NO_ENV)
    assert dataclasses.replace(b, path=a.path) == a


def test_load_any_picks_the_kind_from_the_root() -> None:
    assert isinstance(load_any(DATA / "consumer_full.xml", env=NO_ENV), ConsumerConfig)
    assert isinstance(load_any(DATA / "provider_full.xml", env=NO_ENV), ProviderConfig)


def test_loaders_accept_a_string_path() -> None:
    config = load_consumer(str(DATA / "consumer_minimal.xml"), env=NO_ENV)  # type: ignore[arg-type]
    assert config.path == DATA / "consumer_minimal.xml"


# --- tokens ---------------------------------------------------------------------------


def test_token_from_the_config_file() -> None:
    config = consumer("consumer_full.xml")
    assert config.auth_token is not None
    assert config.auth_token.reveal() == CONSUMER_TOKEN.encode()
    assert config.token_source == "config"


def test_environment_token_overrides_the_file() -> None:
    config = consumer("consumer_full.xml", env={"EDGERQ_AUTH_TOKEN": "from-env-77"})
    assert config.auth_token == Secret("from-env-77")
    assert config.token_source == "EDGERQ_AUTH_TOKEN"
    sp = provider("provider_full.xml", env={"EDGERQ_AUTH_TOKEN": "from-env-77"})
    assert all(pipe.auth_token == Secret("from-env-77") for pipe in sp.pipes)


def test_token_file_overrides_the_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("  from-file-88\n", encoding="utf-8")
    env = {"EDGERQ_AUTH_TOKEN_FILE": str(token_file)}
    config = consumer("consumer_full.xml", env=env)
    assert config.auth_token == Secret("from-file-88")
    assert config.token_source == "EDGERQ_AUTH_TOKEN_FILE"
    minimal = consumer("consumer_minimal.xml", env=env)
    assert minimal.auth_token == Secret("from-file-88")


def test_token_variable_wins_over_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file", encoding="utf-8")
    env = {"EDGERQ_AUTH_TOKEN": "from-var", "EDGERQ_AUTH_TOKEN_FILE": str(token_file)}
    assert consumer("consumer_minimal.xml", env=env).auth_token == Secret("from-var")


def test_empty_token_variable_is_ignored() -> None:
    config = consumer("consumer_full.xml", env={"EDGERQ_AUTH_TOKEN": ""})
    assert config.auth_token == Secret(CONSUMER_TOKEN)


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_token_file_is_a_config_error(tmp_path: Path, kind: str) -> None:
    token_file = tmp_path / "token"
    if kind == "directory":
        token_file.mkdir()
    with pytest.raises(ConfigError) as info:
        consumer("consumer_minimal.xml", env={"EDGERQ_AUTH_TOKEN_FILE": str(token_file)})
    message = str(info.value)
    assert "consumer_minimal.xml" in message
    assert "EDGERQ_AUTH_TOKEN_FILE" in message
    assert str(token_file) in message
    assert "cannot read" in message


def test_empty_token_file_is_a_config_error(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="empty"):
        provider("provider_full.xml", env={"EDGERQ_AUTH_TOKEN_FILE": str(token_file)})


@pytest.mark.parametrize("name", ["consumer_full.xml", "provider_full.xml"])
def test_tokens_never_show_in_repr(name: str) -> None:
    """And never in ``describe`` either: ``test_describe.py``."""
    config = load_any(DATA / name, env=NO_ENV)
    env_config = load_any(DATA / name, env={"EDGERQ_AUTH_TOKEN": "env-token-31337"})
    for cfg in (config, env_config):
        for text in (repr(cfg), str(cfg)):
            assert CONSUMER_TOKEN not in text
            assert PROVIDER_TOKEN not in text
            assert "env-token-31337" not in text
    assert "MASKED" in repr(config)


def test_secret_masks_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.reveal() == b"hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other")


def test_port_zero_binds_any_free_port_and_is_no_duplicate(tmp_path: Path) -> None:
    """Port 0 (any free port, reported on the ready line) is allowed wherever the
    daemon binds: the pipe listener, each service and the admin endpoint, several
    times over, since each gets a port of its own."""
    path = tmp_path / "consumer.xml"
    path.write_text(
        "<service_consumer><admin><port>0</port></admin><listener><port>0</port></listener>"
        f"<services><service><uuid>{SAMPLE_UUID}</uuid><port>0</port></service>"
        f"<service><uuid>{uuid.uuid4()}</uuid><port>0</port></service></services>"
        "</service_consumer>"
    )
    config = load_consumer(path, env=NO_ENV)
    assert [s.port for s in config.services] == [0, 0]
    assert config.listeners[0].port == 0
    assert config.admin is not None and config.admin.port == 0


# --- bad input (not XML, a DOCTYPE, too large, unreadable: test_xmlfile.py) ---------

BAD_FILES = [
    # file, line, words the message must contain
    ("bad_uuid.xml", 8, ["uuid", "not-a-uuid"]),
    ("port_70000.xml", 9, ["port", "70000", "maximum"]),
    ("max_connections_zero.xml", 10, ["max_connections", "minimum"]),
    ("duplicate_uuid.xml", 12, ["duplicate", "uuid", SAMPLE_UUID.hex[:8], "first at line 8"]),
    ("duplicate_port_listener.xml", 9, ["duplicate port", "12345", "line 4"]),
    ("duplicate_port_services.xml", 13, ["duplicate port", "3000", "line 9"]),
    ("missing_port.xml", 7, ["service", "missing", "<port>"]),
    ("missing_listener.xml", 2, ["missing", "<listener>"]),
    ("unknown_element.xml", 10, ["colour", "not expected"]),
    ("two_tcp_listeners.xml", 6, ["second <listener>", "tcp", "line 3"]),
    ("wrong_root.xml", 2, ["root element", "<config>", "<service_consumer>"]),
    ("provider_bad_uuid.xml", 10, ["uuid", "11111111-2222-3333-4444-55555555555"]),
    ("provider_port_70000.xml", 7, ["port", "70000", "maximum"]),
    # A port dialed must be a real one; only ports the daemon binds may be 0.
    ("provider_port_zero.xml", 7, ["port", "'0'", "minimum"]),
    ("provider_duplicate_uuid.xml", 15, ["duplicate", "uuid", "pipe1", "first at line 10"]),
    ("provider_duplicate_pipe_name.xml", 13, ["duplicate pipe name", "same", "line 5"]),
    ("provider_missing_hostname.xml", 4, ["pipe", "missing", "<hostname>"]),
    ("provider_udp.xml", 8, ["udp", "must verify the SC", "server_fingerprint"]),
]


@pytest.mark.parametrize(("name", "line", "words"), BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_file_names_file_line_and_problem(name: str, line: int, words: list[str]) -> None:
    path = BAD / name
    with pytest.raises(ConfigError) as info:
        load_any(path, env=NO_ENV)
    message = str(info.value)
    assert f"{path}:{line}:" in message
    for word in words:
        assert word.lower() in message.lower()


@pytest.mark.parametrize(
    ("name", "load"),
    [
        ("port_70000.xml", load_consumer),
        ("duplicate_port_listener.xml", load_consumer),
        ("provider_duplicate_uuid.xml", load_provider),
        ("not_xml.xml", load_consumer),
        ("not_xml.xml", load_provider),
    ],
)
def test_specific_loaders_report_the_same_errors(name: str, load: Loader) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(BAD / name))):
        load(BAD / name, env=NO_ENV)


@pytest.mark.parametrize(
    ("name", "load", "expected"),
    [
        ("provider_full.xml", load_consumer, "<service_consumer>"),
        ("consumer_full.xml", load_provider, "<service_provider>"),
    ],
)
def test_wrong_kind_of_file(name: str, load: Loader, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(DATA / name, env=NO_ENV)
    assert f"{DATA / name}:2:" in str(info.value)
    assert expected in str(info.value)


def test_errors_never_leak_the_token(tmp_path: Path) -> None:
    text = (DATA / "consumer_full.xml").read_text(encoding="utf-8")
    path = tmp_path / "bad.xml"
    path.write_text(text.replace("<port>3001</port>", "<port>99999</port>"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_consumer(path, env=NO_ENV)
    assert CONSUMER_TOKEN not in str(info.value)
