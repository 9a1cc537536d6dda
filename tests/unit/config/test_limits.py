"""``<limits>`` and ``idle_timeout`` in both config files: values, defaults, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerq.config import load_consumer, load_provider
from edgerq.config.model import PipeLimits
from edgerq.errors import ConfigError

# --- configuration -------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


SC_UUID = "11111111-2222-3333-4444-555555555555"


def test_consumer_limits_and_idle_timeouts(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.xml",
        f"""<service_consumer>
          <idle_timeout>30</idle_timeout>
          <limits><auth_failures>3</auth_failures><auth_block>60.5</auth_block>
            <unauthenticated_pipes>8</unauthenticated_pipes>
            <handshake_timeout>2</handshake_timeout></limits>
          <listener><port>7000</port></listener>
          <services>
            <service><uuid>{SC_UUID}</uuid><port>7001</port></service>
            <service><uuid>aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee</uuid><port>7002</port>
              <idle_timeout>0.5</idle_timeout></service>
          </services></service_consumer>""",
    )
    config = load_consumer(path, {})
    assert [s.idle_timeout for s in config.services] == [30.0, 0.5]
    limits = config.limits
    assert (limits.auth_failures, limits.auth_block, limits.auth_window) == (3, 60.5, 60.0)
    assert (limits.unauthenticated_pipes, limits.handshake_timeout) == (8, 2.0)
    assert limits.control_backlog == PipeLimits().control_backlog


def test_without_limits_the_defaults_apply_and_nothing_idles_out() -> None:
    root = Path(__file__).resolve().parents[3]
    config = load_consumer(root / "sc" / "consumer.xml", {})
    assert config.limits == PipeLimits()
    assert all(s.idle_timeout is None for s in config.services)
    provider = load_provider(root / "sp" / "provider.xml", {})
    assert provider.limits == PipeLimits()


def test_provider_limits_and_service_idle_timeout(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.xml",
        f"""<service_provider>
          <limits><streams_per_pipe>100</streams_per_pipe>
            <control_backlog>65536</control_backlog></limits>
          <pipes><pipe><hostname>127.0.0.1</hostname><port>7000</port><services>
            <service><uuid>{SC_UUID}</uuid><hostname>127.0.0.1</hostname><port>80</port>
              <idle_timeout>120</idle_timeout></service>
          </services></pipe></pipes></service_provider>""",
    )
    config = load_provider(path, {})
    assert (config.limits.streams_per_pipe, config.limits.control_backlog) == (100, 65536)
    assert config.pipes[0].services[0].idle_timeout == 120.0


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        ("<idle_timeout>0</idle_timeout>", ["idle_timeout", "0"]),
        ("<limits><auth_failures>0</auth_failures></limits>", ["auth_failures"]),
        ("<limits><control_backlog>10</control_backlog></limits>", ["control_backlog"]),
        ("<limits><bogus>1</bogus></limits>", ["bogus"]),
        ("<limits/><limits/>", ["<limits> given twice"]),
    ],
)
def test_bad_limits_name_the_line_and_element(tmp_path: Path, xml: str, words: list[str]) -> None:
    path = write(
        tmp_path,
        "c.xml",
        f"<service_consumer>\n{xml}\n<listener><port>7000</port></listener></service_consumer>",
    )
    with pytest.raises(ConfigError) as info:
        load_consumer(path, {})
    message = str(info.value)
    assert f"{path}:2:" in message
    for word in words:
        assert word in message
