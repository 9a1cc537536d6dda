"""``listen_backlog``: large by default, per service, validated (issue 12, finding 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgerq import defaults
from edgerq.config import load_consumer
from edgerq.errors import ConfigError

UUID_A = "11111111-2222-3333-4444-555555555555"
UUID_B = "11111111-2222-3333-4444-666666666666"


def config(tmp_path: Path, root: str = "", service_b: str = "") -> Path:
    path = tmp_path / "consumer.xml"
    path.write_text(
        f"<service_consumer>{root}<listener><port>9000</port></listener><services>"
        f"<service><uuid>{UUID_A}</uuid><port>9001</port></service>"
        f"<service><uuid>{UUID_B}</uuid><port>9002</port>{service_b}</service>"
        "</services></service_consumer>"
    )
    return path


def test_the_default_is_large(tmp_path: Path) -> None:
    services = load_consumer(config(tmp_path), env={}).services
    assert [s.listen_backlog for s in services] == [defaults.LISTEN_BACKLOG] * 2
    assert defaults.LISTEN_BACKLOG >= 4096


def test_a_root_default_and_a_per_service_override(tmp_path: Path) -> None:
    path = config(
        tmp_path,
        root="<listen_backlog>8192</listen_backlog>",
        service_b="<listen_backlog>64</listen_backlog>",
    )
    assert [s.listen_backlog for s in load_consumer(path, env={}).services] == [8192, 64]


@pytest.mark.parametrize("value", ["0", "-1", "lots", "2000000"])
def test_a_bad_value_names_the_line(tmp_path: Path, value: str) -> None:
    path = config(tmp_path, root=f"<listen_backlog>{value}</listen_backlog>")
    with pytest.raises(ConfigError, match=r"consumer.xml:1: .*listen_backlog"):
        load_consumer(path, env={})
