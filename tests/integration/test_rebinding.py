"""The SP's UDP source port changes mid-transfer, as a NAT rebinding would do."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.integration.backends import HashService, payload, sha256
from tests.integration.clients import connect, download, upload
from tests.integration.conftest import Processes, start_consumer, start_provider
from tests.integration.udp_relay import RebindingRelay


def test_nat_rebinding_keeps_open_streams(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    consumer = start_consumer(processes, "udp", tmp_path)
    port = consumer.service_port
    with RebindingRelay(("127.0.0.1", consumer.listener_port)) as relay:
        sp = start_provider(processes, consumer, backend.port, dial_port=relay.port)
        size = 30 * 1024 * 1024
        digest = hashlib.sha256()
        received = 0
        with connect(port, timeout=30) as sock:
            sock.sendall(f"DOWN {size} 21\n".encode())
            rebound = False
            while chunk := sock.recv(1 << 20):
                digest.update(chunk)
                received += len(chunk)
                if not rebound and received > size // 3:
                    old = relay.source_port
                    relay.rebind()
                    rebound = True
                    assert relay.source_port != old
        assert rebound, "the transfer ended before the rebinding"
        assert received == size, f"stream broken by the rebinding after {received} bytes"
        assert digest.hexdigest() == sha256(payload(size, 21))
        # The pipe itself survived: no redial happened, and new streams still work.
        assert "pipe closed" not in sp.log
        assert download(port, 100_000, 3) == sha256(payload(100_000, 3))


def test_replayed_datagrams_are_harmless(
    processes: Processes, backend: HashService, tmp_path: Path
) -> None:
    consumer = start_consumer(processes, "udp", tmp_path)
    sc, port = consumer.sc, consumer.service_port
    with RebindingRelay(("127.0.0.1", consumer.listener_port)) as relay:
        sp = start_provider(processes, consumer, backend.port, dial_port=relay.port)
        data = payload(2 << 20, 8)
        assert upload(port, data) == sha256(data)
        assert download(port, 2 << 20, 4) == sha256(payload(2 << 20, 4))
        # Every datagram of the handshake and the transfers, sent again: QUIC drops
        # duplicates and stale handshake packets; nothing reaches a stream twice.
        assert relay.replay() > 100
        relay.rebind()
        assert relay.replay() > 100  # and once more from another source port
        assert download(port, 1 << 20, 9) == sha256(payload(1 << 20, 9))
        assert upload(port, data) == sha256(data)
        assert "Traceback" not in sc.log + sp.log
        assert sc.proc is not None and sc.proc.poll() is None
