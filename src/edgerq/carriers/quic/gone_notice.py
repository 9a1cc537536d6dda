"""The SC's notice to an SP whose QUIC connection it does not know (pure; no I/O).

After an SC restart on the udp carrier, the SP goes on sending to the same
address, and the new SC process drops every packet: they carry connection ids
it never issued. QUIC's own answer, a stateless reset, needs a token only the
old process knew, so none is sent, and the SP would learn of the restart only
from its heartbeat timeout, 8 s later.

So the SC answers such a datagram with a small notice that echoes the
connection id the SP used, and the SP redials at once when the notice names
the connection id it is using and its pipe has also gone quiet:

- only connection ids an SC with the same private key issued are answered:
  the SC's own id for each pipe carries a tag (an HMAC keyed by a secret
  derived from the key), so a restarted SC recognises its predecessor's
  pipes, and any other datagram (plain text, scans) still gets no answer;
- a notice is never a QUIC packet: its first byte has QUIC's fixed bit clear;
- it is never larger than the datagram it answers (no amplification), and an
  SC sends at most one per source address every ``NOTICE_INTERVAL`` seconds;
- an off-path sender cannot know the connection id, and a stray notice (a
  datagram that raced a connection id's retirement) does nothing while the
  pipe is still heard from.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Hashable

MAGIC = b"\x00edgerq-gone:"
CONNECTION_ID_LENGTH = 8
"""The length of the connection ids both sides issue (qh3's default, made explicit)."""
NOTICE_LENGTH = len(MAGIC) + CONNECTION_ID_LENGTH
NOTICE_INTERVAL = 0.5
"""Seconds between two notices to the same source address."""
MAX_TRACKED_SOURCES = 4096


def is_short_header(datagram: bytes) -> bool:
    """A QUIC 1-RTT packet: the header form bit clear, the fixed bit set."""
    return len(datagram) > 0 and datagram[0] & 0xC0 == 0x40


def destination_id(datagram: bytes) -> bytes:
    """The connection id a short-header packet is addressed to."""
    return datagram[1 : 1 + CONNECTION_ID_LENGTH]


TAG_LENGTH = 4
"""Bytes of a tagged connection id that are its HMAC; the rest is random."""


def tag_secret(key_material: bytes) -> bytes:
    """The secret that tags connection ids, derived from the SC's private key
    (so it outlives a restart and is never sent anywhere)."""
    return hashlib.sha256(b"edgerq connection id tag\0" + key_material).digest()


def _tag(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, nonce, hashlib.sha256).digest()[:TAG_LENGTH]


def tagged_id(secret: bytes) -> bytes:
    """A fresh connection id that ``is_tagged`` recognises under ``secret``."""
    nonce = os.urandom(CONNECTION_ID_LENGTH - TAG_LENGTH)
    return nonce + _tag(secret, nonce)


def is_tagged(connection_id: bytes, secret: bytes) -> bool:
    """Whether an SC holding ``secret`` issued ``connection_id`` (by chance: 2**-32)."""
    if len(connection_id) != CONNECTION_ID_LENGTH:
        return False
    split = CONNECTION_ID_LENGTH - TAG_LENGTH
    return hmac.compare_digest(connection_id[split:], _tag(secret, connection_id[:split]))


def notice_for(datagram: bytes) -> bytes | None:
    """The notice answering ``datagram`` (a short-header packet for an unknown
    connection), or None when it is not one or is too small to answer."""
    if not is_short_header(datagram) or len(datagram) < NOTICE_LENGTH:
        return None
    return MAGIC + destination_id(datagram)


def parse_notice(datagram: bytes) -> bytes | None:
    """The connection id a notice names, or None when ``datagram`` is not a notice."""
    if len(datagram) != NOTICE_LENGTH or not datagram.startswith(MAGIC):
        return None
    return datagram[len(MAGIC) :]


class NoticeLimiter:
    """At most one notice per source address per ``interval``; bounded memory."""

    def __init__(
        self, interval: float = NOTICE_INTERVAL, max_sources: int = MAX_TRACKED_SOURCES
    ) -> None:
        self.interval = interval
        self.max_sources = max_sources
        self._last: dict[Hashable, float] = {}

    def allow(self, source: Hashable, now: float) -> tuple[bool, bool]:
        """(send a notice now?, first notice to this source since it was last forgotten?)"""
        last = self._last.get(source)
        if last is not None and now - last < self.interval:
            return False, False
        if last is None and len(self._last) >= self.max_sources:
            # A flood of sources: forget the ones not answered recently.
            cutoff = now - self.interval
            self._last = {s: t for s, t in self._last.items() if t >= cutoff}
            if len(self._last) >= self.max_sources:
                return False, False
        self._last[source] = now
        return True, last is None
