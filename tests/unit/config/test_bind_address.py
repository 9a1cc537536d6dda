"""``<bind_address>``: one local address for a service, a listener or the admin
endpoint, instead of all addresses (``inaddr_any``) or 127.0.0.1."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgerq.config import load_consumer, load_provider
from edgerq.errors import ConfigError

UUID = "11111111-2222-3333-4444-555555555555"


def consumer_xml(service: str = "", listener: str = "", admin: str = "") -> str:
    return f"""<?xml version="1.0"?>
<service_consumer>
  <listener><port>12345</port>{listener}</listener>
  <admin><port>9100</port>{admin}</admin>
  <services>
    <service>
      <uuid>{UUID}</uuid>
      <port>3000</port>{service}
    </service>
  </services>
</service_consumer>
"""


def write(tmp_path: Path, text: str, name: str = "consumer.xml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_without_it_the_old_rules_hold(tmp_path: Path) -> None:
    config = load_consumer(write(tmp_path, consumer_xml()), env={})
    assert config.services[0].host == "127.0.0.1"
    assert config.listener.host == "127.0.0.1"
    assert config.admin is not None and config.admin.host == "127.0.0.1"
    config = load_consumer(
        write(tmp_path, consumer_xml(service="<inaddr_any>yes</inaddr_any>")), env={}
    )
    assert config.services[0].host == "0.0.0.0"


@pytest.mark.parametrize(
    ("written", "expected"),
    [("10.230.80.10", "10.230.80.10"), (" 10.0.0.1 ", "10.0.0.1"), ("::1", "::1")],
)
def test_a_service_listens_on_its_bind_address(tmp_path: Path, written: str, expected: str) -> None:
    xml = consumer_xml(service=f"<bind_address>{written}</bind_address>")
    config = load_consumer(write(tmp_path, xml), env={})
    assert config.services[0].host == expected
    assert config.services[0].bind_address == expected
    assert config.listener.host == "127.0.0.1"  # the others keep their default


def test_listener_and_admin_take_one_too(tmp_path: Path) -> None:
    xml = consumer_xml(
        listener="<bind_address>10.230.80.10</bind_address>",
        admin="<bind_address>10.230.80.11</bind_address>",
    )
    config = load_consumer(write(tmp_path, xml), env={})
    assert config.listener.host == "10.230.80.10"
    assert config.admin is not None and config.admin.host == "10.230.80.11"
    assert config.services[0].host == "127.0.0.1"


def test_sp_admin_takes_one(tmp_path: Path) -> None:
    xml = f"""<service_provider>
  <admin><port>9100</port><bind_address>10.1.2.3</bind_address></admin>
  <pipes><pipe><hostname>sc.example</hostname><port>12345</port><services><service>
    <uuid>{UUID}</uuid><hostname>127.0.0.1</hostname><port>8000</port>
  </service></services></pipe></pipes>
</service_provider>"""
    config = load_provider(write(tmp_path, xml, "provider.xml"), env={})
    assert config.admin is not None and config.admin.host == "10.1.2.3"


def test_a_name_is_refused_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, consumer_xml(service="\n      <bind_address>front.local</bind_address>"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}:9: <bind_address> must be an IP")):
        load_consumer(path, env={})


def test_together_with_inaddr_any_yes_is_refused(tmp_path: Path) -> None:
    xml = consumer_xml(
        service="<inaddr_any>yes</inaddr_any>\n      <bind_address>10.0.0.1</bind_address>"
    )
    path = write(tmp_path, xml)
    with pytest.raises(ConfigError, match=r":9: <bind_address> and <inaddr_any>yes"):
        load_consumer(path, env={})


def test_inaddr_any_no_with_a_bind_address_is_fine(tmp_path: Path) -> None:
    xml = consumer_xml(service="<inaddr_any>no</inaddr_any><bind_address>10.0.0.1</bind_address>")
    config = load_consumer(write(tmp_path, xml), env={})
    assert config.services[0].host == "10.0.0.1"
