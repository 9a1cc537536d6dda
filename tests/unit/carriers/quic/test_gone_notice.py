"""The SC's notice of an unknown QUIC connection: what is answered, and how often."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgerq.carriers.quic import gone_notice
from edgerq.carriers.quic.gone_notice import (
    CONNECTION_ID_LENGTH,
    MAGIC,
    NOTICE_LENGTH,
    NoticeLimiter,
    is_tagged,
    notice_for,
    parse_notice,
    tag_secret,
    tagged_id,
)

CID = bytes(range(1, 1 + CONNECTION_ID_LENGTH))


def short_packet(cid: bytes = CID, size: int = 40) -> bytes:
    return bytes([0x43]) + cid + bytes(size - 1 - len(cid))


def test_a_short_header_packet_gets_a_notice_naming_its_connection() -> None:
    notice = notice_for(short_packet())
    assert notice == MAGIC + CID
    assert parse_notice(notice) == CID


def test_long_header_and_malformed_datagrams_get_no_notice() -> None:
    assert notice_for(b"\xc3" + bytes(1300)) is None  # an Initial: qh3's to handle
    assert notice_for(b"\x03" + bytes(40)) is None  # fixed bit clear: not QUIC v1
    assert notice_for(b"") is None
    assert notice_for(short_packet(size=NOTICE_LENGTH - 1)) is None  # would amplify


def test_a_notice_is_never_mistaken_for_a_quic_packet() -> None:
    assert not gone_notice.is_short_header(MAGIC + CID)
    assert notice_for(MAGIC + CID) is None  # so two SCs never answer each other


def test_only_exact_notices_parse() -> None:
    assert parse_notice(MAGIC + CID + b"x") is None
    assert parse_notice(MAGIC + CID[:-1]) is None
    assert parse_notice(b"\x00edgerq-gonX" + bytes(CONNECTION_ID_LENGTH + 1)) is None
    assert parse_notice(short_packet(size=NOTICE_LENGTH)) is None


@given(st.binary(max_size=1500))
def test_any_datagram_gets_at_most_a_notice_no_larger_than_itself(datagram: bytes) -> None:
    notice = notice_for(datagram)
    if notice is not None:
        assert len(notice) <= len(datagram)
        assert parse_notice(notice) == datagram[1 : 1 + CONNECTION_ID_LENGTH]


def test_one_notice_per_source_per_interval() -> None:
    limiter = NoticeLimiter(interval=0.5)
    assert limiter.allow("a", 10.0) == (True, True)
    assert limiter.allow("a", 10.2) == (False, False)
    assert limiter.allow("b", 10.2) == (True, True)
    assert limiter.allow("a", 10.6) == (True, False)  # again, but no new log line


def test_a_flood_of_sources_keeps_memory_bounded() -> None:
    limiter = NoticeLimiter(interval=0.5, max_sources=100)
    sent = sum(limiter.allow(("10.0.0.1", port), 1.0)[0] for port in range(1000))
    assert sent == 100  # the rest wait: all 100 were answered within the interval
    assert len(limiter._last) <= 100
    assert limiter.allow(("10.0.0.1", 5000), 2.0) == (True, True)  # old ones forgotten
    assert len(limiter._last) == 1


def test_ids_tagged_with_one_key_are_recognised_only_with_that_key() -> None:
    secret, other = tag_secret(b"key one"), tag_secret(b"key two")
    ids = {tagged_id(secret) for _ in range(100)}
    assert len(ids) == 100  # random, so pipes never share one
    assert all(len(i) == CONNECTION_ID_LENGTH and is_tagged(i, secret) for i in ids)
    assert not any(is_tagged(i, other) for i in ids)
    assert tag_secret(b"key one") == secret  # the same key after a restart: the same secret


@given(st.binary(min_size=CONNECTION_ID_LENGTH, max_size=CONNECTION_ID_LENGTH))
def test_random_ids_are_not_taken_for_tagged_ones(connection_id: bytes) -> None:
    # A 32-bit tag: Hypothesis would need ~4 billion tries to find one by chance.
    assert not is_tagged(connection_id, tag_secret(b"key"))
    assert not is_tagged(connection_id[:-1], tag_secret(b"key"))
