"""The Python a small keep-alive request costs inside SC and SP, without sockets.

``bench.hotpath`` measures whole processes, system calls and wake-ups
included, to ~10 %; this measures only the pipe's own Python (``PipeConnection``,
``Stream``, ``LocalConnection``, the frame codec), steady to ~2 %, so a lever
worth half a microsecond shows. Two sans-I/O cores (an SC's and an SP's) are
joined by hand; each of N streams has a ``LocalConnection`` at both ends on a
stand-in transport that takes every write at once. One exchange: every client
sends a 100 B request (as if read from its socket), the SC's frames reach the
SP in one read, every service answers 300 B, the SP's frames reach the SC in
one read, the clients' sockets take them. Prints CPU µs per request.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

from edgerq.pipe.connection import PipeConnection
from edgerq.pipe.events import OpenRequested, PipeEvent, Role
from edgerq.pipe.outbox import ByteOutbox
from edgerq.pipe.settings import PipeSettings
from edgerq.runtime.relay import LocalConnection

SERVICE = uuid.UUID(int=7)
REQUEST = 100
RESPONSE = 300


class Transport:
    """A socket that takes every write at once and is always reading."""

    def write(self, data: object) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def __init__(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


class Bench:
    def __init__(self, streams: int) -> None:
        self.sc_out, self.sp_out = ByteOutbox(), ByteOutbox()
        self.requests: list[OpenRequested] = []
        self.sc = PipeConnection(PipeSettings(Role.CONSUMER, b"k"), self.sc_out, now=0.0)
        self.sp = PipeConnection(
            PipeSettings(Role.PROVIDER, b"k", "sp"), self.sp_out, now=0.0, emit=self._sp_event
        )
        self.sc.start(0.0)
        self.sp.start(0.0)
        self.pump()
        self.clients: list[LocalConnection] = []
        self.services: list[LocalConnection] = []
        for _ in range(streams):
            client = LocalConnection(4096)
            client.connection_made(Transport())  # type: ignore[arg-type]
            stream = self.sc.open_stream(
                SERVICE, window=256 * 1024, max_frame=4096, client="c:1", sink=client
            )
            client.bind(stream)
            self.clients.append(client)
        self.pump()
        for event in self.requests:
            stream = self.sp.accept_stream(event.request)
            service = LocalConnection(4096)
            service.connection_made(Transport())  # type: ignore[arg-type]
            service.bind(stream)
            self.sp.answer_open(stream, None)
            self.services.append(service)
        self.pump()

    def _sp_event(self, event: PipeEvent) -> None:
        if isinstance(event, OpenRequested):
            self.requests.append(event)

    def pump(self) -> None:
        for _ in range(10):
            a, b = bytes(self.sc_out.take()), bytes(self.sp_out.take())
            if a:
                self.sp.receive(a, 0.0)
            if b:
                self.sc.receive(b, 0.0)

    def exchange(self) -> tuple[float, float]:
        """One request on every stream; (SC, SP) CPU seconds."""
        clock = time.process_time
        t0 = clock()
        for client in self.clients:  # the clients' requests, read from their sockets
            client.get_buffer(-1)
            client.buffer_updated(REQUEST)
        wire = bytes(self.sc_out.take())
        t1 = clock()
        self.sp.receive(wire, 0.0)  # their frames in one read, written to the services
        for service in self.services:  # the answers, read from the services' sockets
            service.get_buffer(-1)
            service.buffer_updated(RESPONSE)
        wire = bytes(self.sp_out.take())
        t2 = clock()
        self.sc.receive(wire, 0.0)  # written to the clients
        t3 = clock()
        return (t1 - t0) + (t3 - t2), t2 - t1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.hotpath_core",
        description="CPU µs per small request in the pipe's own Python (no sockets).",
    )
    p.add_argument("--streams", type=int, default=16, help="concurrent streams (default 16)")
    p.add_argument("--exchanges", type=int, default=20000, help="per round (default 20000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds; the median is shown")
    args = p.parse_args(argv)
    bench = Bench(args.streams)
    per_round: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        sc = sp = 0.0
        for _ in range(args.exchanges // args.streams):
            a, b = bench.exchange()
            sc += a
            sp += b
        n = (args.exchanges // args.streams) * args.streams
        per_round.append((sc * 1e6 / n, sp * 1e6 / n))
    sc_med = statistics.median(r[0] for r in per_round)
    sp_med = statistics.median(r[1] for r in per_round)
    print(f"{args.streams} streams: SC {sc_med:.2f} SP {sp_med:.2f} µs per request (Python only)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
