"""The SC's udp pipe port: qh3's server fed batches of datagrams, counting every drop.

Datagrams of an established connection go to it as one batch; anything else
takes qh3's per-datagram path (``qh3_compat.CompatServer``), where every
datagram turned away is counted by reason (``DropReport``) and summed up in
one log line per interval while drops go on. A packet for a connection this
SC does not know gets a "gone" notice, so an SP of the process before a
restart redials at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any, cast

from qh3.asyncio.protocol import QuicConnectionProtocol

from edgerq.carriers.quic import gone_notice, qh3_compat
from edgerq.carriers.quic.drop_report import DropReport

log = logging.getLogger("edgerq.quic")


class BatchingServer(qh3_compat.CompatServer):
    """qh3's server fed whole batches of datagrams (recvmmsg/GRO) by qh3's fast transport.

    qh3's ``serve`` handles one datagram at a time: a Python header parse,
    the connection's receive, its events and a transmit for every ~1200 bytes.
    Here datagrams of an established connection (short header, a connection
    id this server issued) go to their connection as one batch; anything else
    (handshakes, retries, unknown ids) takes qh3's per-datagram path.
    """

    def __init__(self, *args: Any, id_secret: bytes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._id_secret = id_secret
        self._notices = gone_notice.NoticeLimiter()
        self.drops = DropReport()
        self._flush_timer: asyncio.TimerHandle | None = None
        # Looked up once, not per batch: the configuration is fixed, and qh3 keeps
        # one table of connection ids for the server's life (it only adds and removes).
        self._cid_end = 1 + self.connection_id_length
        self._by_id = self.protocols

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        data = cast(bytes, data)
        if (
            gone_notice.is_short_header(data)
            and len(data) >= self.min_datagram
            and gone_notice.destination_id(data) not in self.protocols
        ):
            self.dropped(qh3_compat.Drop.UNKNOWN_CONNECTION, data, addr)
            self._unknown_connection(data, addr)
            return
        super().datagram_received(data, addr)

    def dropped(self, reason: str, data: bytes, addr: Any) -> None:
        """Count it; one summary line per interval while drops go on (never one per datagram)."""
        now = time.monotonic()
        source = str(addr[0]).removeprefix("::ffff:") if addr else "?"
        if self.drops.note(reason, source, now):
            self._report(now)
        elif self._flush_timer is None:
            delay = max(0.0, self.drops.next_report() - now)
            self._flush_timer = self.loop.call_later(delay, self._flush_report)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return asyncio.get_running_loop()

    def _flush_report(self) -> None:
        self._flush_timer = None
        if self.drops.pending:
            self._report(time.monotonic())

    def _report(self, now: float) -> None:
        summary = self.drops.summary(now)
        if summary is not None:
            line, notable = summary
            # A Retry or two is every pipe's handshake; anything else is worth a warning.
            log.log(
                logging.WARNING if notable else logging.DEBUG,
                "udp pipe port %s: %s",
                self._port(),
                line,
            )

    def _port(self) -> str:
        transport = self.transport
        name = transport.get_extra_info("sockname") if transport is not None else None
        return str(name[1]) if name else "?"

    def close(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        super().close()  # type: ignore[no-untyped-call]

    def _unknown_connection(self, data: bytes, addr: Any) -> None:
        """A packet of a connection this SC does not have (qh3 would drop it in
        silence): most likely an SP's pipe to the process before a restart. Say so,
        so the SP redials now instead of after its heartbeat timeout."""
        notice = gone_notice.notice_for(data)
        transport = self.transport
        if (
            notice is None
            or transport is None
            or not gone_notice.is_tagged(gone_notice.destination_id(data), self._id_secret)
        ):
            return  # not one of ours: garbage, a scan, or another server's
        send, first = self._notices.allow(addr, time.monotonic())
        if not send:
            return
        if first:
            log.info(
                "QUIC packets from %s:%s for a connection this SC does not know "
                "(a pipe to it before a restart?): telling the SP to redial",
                str(addr[0]).removeprefix("::ffff:"),
                addr[1],
            )
        transport.sendto(notice, addr)

    def datagrams_received(self, datagrams: list[bytes], addr: Any) -> None:
        cid_end = self._cid_end
        protocols = self._by_id
        batch: list[bytes] = []
        owner: QuicConnectionProtocol | None = None
        for data in datagrams:
            protocol = protocols.get(data[1:cid_end]) if data and not data[0] & 0x80 else None
            if protocol is not owner and batch:
                assert owner is not None
                owner.datagrams_received(batch, addr)
                batch = []
            owner = protocol
            if protocol is None:
                self.datagram_received(data, addr)
            else:
                batch.append(data)
        if batch and owner is not None:
            owner.datagrams_received(batch, addr)


class QuicListener:
    """An SC's UDP port accepting QUIC pipes."""

    def __init__(self, server: BatchingServer) -> None:
        self._server = server
        transport = server.transport
        assert transport is not None
        self.address: tuple[str, int] = transport.get_extra_info("sockname")[:2]

    def dropped(self) -> Mapping[str, int]:
        """Datagrams turned away so far, by reason (``qh3_compat.Drop``)."""
        return self._server.drops.totals

    def close(self) -> None:
        self._server.close()
