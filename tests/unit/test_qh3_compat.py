"""The udp carrier runs only on a qh3 release whose internals it was checked against."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import qh3

from edgerq.carriers import qh3_compat, require_usable
from edgerq.config.model import ConsumerConfig, ListenerConfig, PipeConfig, ProviderConfig
from edgerq.errors import ConfigError
from edgerq.sc import ServiceConsumer
from edgerq.sp import ServiceProvider


@pytest.fixture
def unknown_qh3(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(qh3, "__version__", "9.8.7")
    return "9.8.7"


def test_the_pinned_release_is_known() -> None:
    assert qh3.__version__ in qh3_compat.KNOWN_VERSIONS
    qh3_compat.require_known_version()
    require_usable("udp")


def test_an_unknown_release_is_refused_naming_both_versions(unknown_qh3: str) -> None:
    with pytest.raises(qh3_compat.UnsupportedQh3) as refused:
        qh3_compat.require_known_version()
    message = str(refused.value)
    assert f"qh3 {unknown_qh3} is installed" in message
    for known in qh3_compat.KNOWN_VERSIONS:
        assert known in message
    assert isinstance(refused.value, ConfigError)  # the daemons report it and exit 1


def test_the_tcp_carrier_does_not_care(unknown_qh3: str) -> None:
    require_usable("tcp")


def test_the_sc_refuses_to_accept_udp_pipes(unknown_qh3: str, tmp_path: Path) -> None:
    listener = ListenerConfig(
        port=0,
        protocol="udp",
        certificate=tmp_path / "cert.pem",
        private_key=tmp_path / "key.pem",
    )
    sc = ServiceConsumer(ConsumerConfig(path=tmp_path / "consumer.xml", listeners=(listener,)))
    with pytest.raises(qh3_compat.UnsupportedQh3, match=unknown_qh3):
        asyncio.run(sc.start())
    assert not sc.listener_addresses
    assert not (tmp_path / "cert.pem").exists()  # refused before doing anything


def test_the_sp_refuses_to_start_with_a_udp_pipe(unknown_qh3: str, tmp_path: Path) -> None:
    pipe = PipeConfig(name="p", hostname="127.0.0.1", port=9, services=(), protocol="udp")
    sp = ServiceProvider(ProviderConfig(path=tmp_path / "provider.xml", pipes=(pipe,)))
    with pytest.raises(qh3_compat.UnsupportedQh3, match=unknown_qh3):
        asyncio.run(sp.start())
    assert not sp.pipes  # nothing dialed
