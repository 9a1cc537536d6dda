"""A UDP relay that can change its upstream source port at will, like a NAT
rebinding: the SP sends to the relay, the relay forwards to the SC."""

from __future__ import annotations

import selectors
import socket
import threading


class RebindingRelay:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.downstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.downstream.bind(("127.0.0.1", 0))
        self.port: int = self.downstream.getsockname()[1]
        self._client: tuple[str, int] | None = None
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.downstream, selectors.EVENT_READ, "down")
        self._lock = threading.Lock()
        self._up = self._new_upstream()
        self.rebinds = 0
        self.recorded: list[bytes] = []
        """Every datagram the SP sent (up to 5000), for replaying."""
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _new_upstream(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        self._selector.register(sock, selectors.EVENT_READ, "up")
        return sock

    @property
    def source_port(self) -> int:
        return int(self._up.getsockname()[1])

    def rebind(self) -> None:
        """From now on, forward from a new source port (the old one stays open)."""
        with self._lock:
            self._up = self._new_upstream()
            self.rebinds += 1

    def replay(self) -> int:
        """Send every recorded datagram to the SC once more; return how many."""
        with self._lock:
            up = self._up
        for data in list(self.recorded):
            up.sendto(data, self.upstream)
        return len(self.recorded)

    def _run(self) -> None:
        while not self._stop:
            for key, _ in self._selector.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, addr = sock.recvfrom(65536)
                except OSError:
                    continue
                if key.data == "down":
                    self._client = addr
                    if len(self.recorded) < 5000:
                        self.recorded.append(data)
                    with self._lock:
                        up = self._up
                    up.sendto(data, self.upstream)
                elif self._client is not None:
                    self.downstream.sendto(data, self._client)

    def __enter__(self) -> RebindingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self._thread.join(5)
        for key in list(self._selector.get_map().values()):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            sock.close()
        self._selector.close()
