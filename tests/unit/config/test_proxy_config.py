"""``<proxy_protocol>`` on a provider service: loaded, bad values refused (how
``edgerq check`` describes it: ``test_describe.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerq.config import load_provider
from edgerq.errors import ConfigError

NO_ENV: dict[str, str] = {}


def provider_file(tmp_path: Path, proxy_elements: list[str]) -> Path:
    services = "".join(
        f"""
        <service>
          <uuid>11111111-2222-3333-4444-55555555555{index}</uuid>
          <name>svc{index}</name>
          <hostname>127.0.0.1</hostname>
          <port>{8080 + index}</port>{element}
        </service>"""
        for index, element in enumerate(proxy_elements)
    )
    path = tmp_path / "provider.xml"
    path.write_text(
        f"""<?xml version="1.0" encoding="UTF-8"?>
<service_provider>
  <pipes>
    <pipe>
      <hostname>127.0.0.1</hostname>
      <port>2080</port>
      <services>{services}
      </services>
    </pipe>
  </pipes>
</service_provider>
"""
    )
    return path


def test_proxy_protocol_is_per_service_and_off_by_default(tmp_path: Path) -> None:
    path = provider_file(
        tmp_path,
        [
            "",
            "<proxy_protocol>v1</proxy_protocol>",
            "<proxy_protocol> v2 </proxy_protocol>",
        ],
    )
    config = load_provider(path, env=NO_ENV)
    assert [s.proxy_protocol for s in config.pipes[0].services] == [None, 1, 2]


@pytest.mark.parametrize("value", ["v3", "1", "V1", "yes", ""])
def test_unknown_proxy_protocol_is_refused_with_file_and_line(tmp_path: Path, value: str) -> None:
    path = provider_file(tmp_path, [f"<proxy_protocol>{value}</proxy_protocol>"])
    with pytest.raises(ConfigError) as info:
        load_provider(path, env=NO_ENV)
    message = str(info.value)
    assert f"{path}:12:" in message  # the <proxy_protocol> line
    assert "proxy_protocol" in message
    assert f"'{value}'" in message
