"""``<all_addresses>``: one pipe per address a hostname resolves to."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from edgerq.config import load_provider
from edgerq.config.model import PipeConfig, ProviderService
from edgerq.sp.addresses import AddressBook, address_pipe, sorted_addresses

SERVICE = ProviderService(uuid.uuid4(), "web", "127.0.0.1", 8000)
PIPE = PipeConfig(
    name="web",
    hostname="tasks.sc",
    port=4433,
    services=(SERVICE,),
    all_addresses=True,
    resolve_interval=2.0,
)


class FakeDns:
    """Answers what the test sets; raises OSError while ``down``."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = list(addresses)
        self.down = False
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        if self.down:
            raise OSError("Temporary failure in name resolution")
        return sorted_addresses(self.addresses)


def refresh(book: AddressBook, pipes: list[PipeConfig]) -> bool:
    return asyncio.run(book.refresh(pipes))


def test_one_pipe_per_address_named_by_address() -> None:
    dns = FakeDns("10.0.1.6", "10.0.1.5", "10.0.1.5")
    book = AddressBook(dns)
    assert refresh(book, [PIPE]) is True
    pipes = book.expand([PIPE])
    assert [(p.name, p.hostname) for p in pipes] == [
        ("web@10.0.1.5", "10.0.1.5"),
        ("web@10.0.1.6", "10.0.1.6"),
    ]
    assert dns.asked == [("tasks.sc", 4433)]
    for p in pipes:
        assert p.all_addresses is False
        assert p.port == 4433
        assert p.services == (SERVICE,)
        assert p.server_name == "tasks.sc"  # udp verifies the certificate by the name


def test_configured_server_name_is_kept_and_ipv6_is_bracketed() -> None:
    pipe = replace(PIPE, server_name="sc.example.org")
    assert address_pipe(pipe, "fd00::5").name == "web@[fd00::5]"
    assert address_pipe(pipe, "fd00::5").server_name == "sc.example.org"


def test_pipes_without_all_addresses_pass_through_unresolved() -> None:
    plain = replace(PIPE, name="plain", all_addresses=False)
    dns = FakeDns("10.0.1.5")
    book = AddressBook(dns)
    assert refresh(book, [plain]) is False
    assert book.expand([plain]) == (plain,)
    assert dns.asked == []
    assert not AddressBook.wanted([plain])


def test_new_and_vanished_addresses_change_the_pipes(caplog: pytest.LogCaptureFixture) -> None:
    dns = FakeDns("10.0.1.5", "10.0.1.6")
    book = AddressBook(dns)
    refresh(book, [PIPE])
    dns.addresses = ["10.0.1.6", "10.0.1.7"]
    with caplog.at_level(logging.INFO, logger="edgerq.sp"):
        assert refresh(book, [PIPE]) is True
    assert [p.hostname for p in book.expand([PIPE])] == ["10.0.1.6", "10.0.1.7"]
    assert "new: 10.0.1.7" in caplog.text
    assert "gone: 10.0.1.5" in caplog.text
    assert refresh(book, [PIPE]) is False  # same answer: nothing to do


def test_failed_lookup_keeps_known_addresses_and_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dns = FakeDns("10.0.1.5", "10.0.1.6")
    book = AddressBook(dns)
    refresh(book, [PIPE])
    dns.down = True
    with caplog.at_level(logging.INFO, logger="edgerq.sp"):
        assert refresh(book, [PIPE]) is False
        assert refresh(book, [PIPE]) is False
    assert len(book.expand([PIPE])) == 2
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot resolve tasks.sc" in warnings[0].getMessage()
    assert "keeping 2 known address(es)" in warnings[0].getMessage()
    dns.down = False
    with caplog.at_level(logging.INFO, logger="edgerq.sp"):
        refresh(book, [PIPE])
    assert "resolves again" in caplog.text


def test_a_name_that_never_resolved_has_no_pipe_yet() -> None:
    dns = FakeDns()
    dns.down = True
    book = AddressBook(dns)
    refresh(book, [PIPE])
    assert book.expand([PIPE]) == ()


def test_removed_pipe_is_forgotten() -> None:
    book = AddressBook(FakeDns("10.0.1.5"))
    refresh(book, [PIPE])
    refresh(book, [])
    assert book.expand([PIPE]) == ()


def test_interval_is_the_shortest_asked_for() -> None:
    other = replace(PIPE, name="other", resolve_interval=0.5)
    assert AddressBook.interval([PIPE, other]) == 0.5


def test_config_reads_all_addresses_and_interval(tmp_path: Path) -> None:
    path = tmp_path / "provider.xml"
    path.write_text(
        "<service_provider><pipes><pipe><name>web</name><hostname>tasks.sc</hostname>"
        "<port>12345</port><all_addresses>yes</all_addresses>"
        "<resolve_interval>2.5</resolve_interval><services><service>"
        f"<uuid>{SERVICE.uuid}</uuid><hostname>web</hostname><port>80</port>"
        "</service></services></pipe>"
        "<pipe><name>plain</name><hostname>sc</hostname><port>12345</port><services><service>"
        f"<uuid>{SERVICE.uuid}</uuid><hostname>web</hostname><port>80</port>"
        "</service></services></pipe></pipes></service_provider>"
    )
    web, plain = load_provider(path, env={}).pipes
    assert (web.all_addresses, web.resolve_interval) == (True, 2.5)
    assert (plain.all_addresses, plain.resolve_interval) == (False, 5.0)


def test_config_refuses_a_tiny_interval(tmp_path: Path) -> None:
    from edgerq.errors import ConfigError

    path = tmp_path / "provider.xml"
    path.write_text(
        "<service_provider><pipes><pipe><hostname>tasks.sc</hostname><port>1</port>"
        "<all_addresses>yes</all_addresses>\n<resolve_interval>0.1</resolve_interval>"
        f"<services><service><uuid>{SERVICE.uuid}</uuid><hostname>w</hostname><port>80</port>"
        "</service></services></pipe></pipes></service_provider>"
    )
    with pytest.raises(ConfigError, match=r"provider\.xml:2:.*resolve_interval"):
        load_provider(path, env={})
