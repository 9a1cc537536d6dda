"""Command line: ``edgerq sc|sp|check CONFIG``."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from edgerq import __version__, compiled
from edgerq.config import (
    ConsumerConfig,
    ProviderConfig,
    load_any,
    load_consumer,
    load_provider,
    pki,
)
from edgerq.errors import ConfigError
from edgerq.runtime import oslimits
from edgerq.runtime.logs import setup_logging
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider

log = logging.getLogger("edgerq")

LEVELS = ("debug", "info", "warning", "error")


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before and after the command; a subcommand must not reset the
    # value given before it, hence SUPPRESS as its default.
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="info" if top else argparse.SUPPRESS,
        help="least severe messages to log (default: info)",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text" if top else argparse.SUPPRESS,
        help="log lines as text or JSON objects, on stderr (default: text)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgerq",
        description="Reverse tunnels to TCP services: the SP dials out from the private "
        "network, the SC serves its services on the public host.",
    )
    version = f"edgerq {__version__} ({compiled.describe()})"
    parser.add_argument("--version", action="version", version=version)
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="summarize a running daemon from its admin endpoint",
        description="Print pipes, services, open streams, bytes and uptime of a running SC "
        "or SP, read from its <admin> endpoint.",
    )
    status.add_argument("url", metavar="URL", help="e.g. http://127.0.0.1:9100")
    status.add_argument("--version", action="version", version=version)
    _common(status, top=False)
    for name, help_text in (
        ("sc", "run a service consumer (public side) from consumer.xml"),
        ("sp", "run a service provider (private side) from provider.xml"),
        ("check", "validate a config file and print what it would do"),
        (
            "fingerprint",
            "print the SHA-256 fingerprint of an SC's udp certificate "
            "(generated first if missing), for <server_fingerprint>",
        ),
    ):
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("config", type=Path, metavar="CONFIG.xml")
        cmd.add_argument("--version", action="version", version=version)
        _common(cmd, top=False)
    pki.add_parser(sub)
    return parser


def describe(config: ConsumerConfig | ProviderConfig) -> str:
    lines = []
    if isinstance(config, ConsumerConfig):
        lines.append(f"{config.path}: service consumer (SC)")
        for listener in config.listeners:
            tls = f", certificate {listener.certificate}" if listener.protocol == "udp" else ""
            lines.append(
                f"  accepts pipes ({listener.protocol}) on {listener.host}:{listener.port}{tls}"
            )
        lines.append(
            "  SP authentication: "
            + (
                f"token from {config.token_source}"
                if config.auth_token is not None
                else "none (any SP that reaches the listener may register)"
            )
        )
        if not config.services:
            lines.append("  no services configured")
        for s in config.services:
            lines.append(
                f"  service '{s.name}' {s.uuid} ({s.type}) on {s.host}:{s.port}: "
                f"max_connections {s.max_connections}, request_buffer "
                f"{s.request_buffer}, request_ttl {s.request_ttl:g} s, "
                f"stream_window {s.stream_window}"
                + (f", idle_timeout {s.idle_timeout:g} s" if s.idle_timeout else "")
            )
            rate = s.effective_min_rate
            lines.append(
                f"    fair: {s.per_source_cap} connection(s) and {s.waiting_per_source} "
                "waiting per client address"
                + (
                    f" ({len(s.trusted_sources)} trusted network(s) exempt)"
                    if s.trusted_sources
                    else ""
                )
                + (
                    f", request head within {s.header_timeout:g} s"
                    if s.type == "http" and s.header_timeout
                    else ""
                )
                + (f", min_rate {rate:g} B/s over {s.rate_window:g} s" if rate else ", no min_rate")
            )
        lim = config.limits
        lines.append(
            f"  limits: {lim.auth_failures} failed authentications in {lim.auth_window:g} s "
            f"block a source for {lim.auth_block:g} s; at most {lim.unauthenticated_pipes} "
            f"pipes authenticating, each for {lim.handshake_timeout:g} s; "
            f"pipe_buffer {lim.pipe_buffer}"
        )
    else:
        lines.append(f"{config.path}: service provider (SP)")
        for p in config.pipes:
            token = f"token from {p.token_source}" if p.auth_token is not None else "no token"
            lines.append(
                f"  pipe '{p.name}' ({p.protocol}) to {p.hostname}:{p.port}, {token}, "
                f"stream_window {p.stream_window}, pipe_buffer {config.limits.pipe_buffer}"
            )
            if p.protocol == "udp":
                if p.server_fingerprint:
                    lines.append(f"    SC certificate pinned to {p.server_fingerprint}")
                elif p.ca_file:
                    lines.append(f"    SC certificate verified against {p.ca_file}")
                else:
                    lines.append("    SC certificate NOT verified (insecure)")
            for ps in p.services:
                proxy = f" (PROXY protocol v{ps.proxy_protocol})" if ps.proxy_protocol else ""
                idle = f", idle_timeout {ps.idle_timeout:g} s" if ps.idle_timeout else ""
                lines.append(
                    f"    service '{ps.name}' {ps.uuid} -> {ps.hostname}:{ps.port}{proxy}{idle}"
                )
    return "\n".join(lines)


def _fingerprint(config: ConsumerConfig | ProviderConfig) -> int:
    from edgerq.config.tls import ensure_certificate, fingerprint_file

    if not isinstance(config, ConsumerConfig):
        print(
            f"edgerq: {config.path} is a provider config; fingerprint reads consumer.xml",
            file=sys.stderr,
        )
        return 1
    found = False
    for listener in config.listeners:
        if listener.certificate is None or listener.private_key is None:
            continue
        found = True
        try:
            ensure_certificate(listener.certificate, listener.private_key)
            print(f"{fingerprint_file(listener.certificate)}  {listener.certificate}")
        except (ConfigError, OSError, ValueError) as exc:
            print(f"edgerq: {exc}", file=sys.stderr)
            return 1
    if not found:
        print(f"edgerq: {config.path} has no udp listener and no certificate", file=sys.stderr)
        return 1
    return 0


MALLOC_MMAP_THRESHOLD = 4 * 1024 * 1024
MALLOC_TRIM_THRESHOLD = 32 * 1024 * 1024


def _tune_allocator() -> None:
    """Keep glibc from handing the heap back to the kernel after every socket read.

    Each read of a pipe is a fresh ``bytes`` of up to 256 KiB (uvloop). With
    glibc's defaults such blocks sit at the top of the heap, are trimmed with
    ``brk`` as soon as they are freed and faulted in again by the next read:
    on a bulk transfer that doubled the SC's system time. Allocations up to
    1 MiB now come from the heap, and up to 8 MiB of free heap is kept.
    Other C libraries are left alone.
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)
    mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)


def _install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _run_daemon(config: ConsumerConfig | ProviderConfig) -> int:
    daemon: ServiceConsumer | ServiceProvider = (
        ServiceConsumer(config) if isinstance(config, ConsumerConfig) else ServiceProvider(config)
    )
    loop = asyncio.get_running_loop()
    stop, now = asyncio.Event(), asyncio.Event()

    def on_stop_signal() -> None:
        if stop.is_set():
            now.set()  # a second signal: no more waiting
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal)
    try:
        await daemon.start()
    except OSError as exc:
        log.error("%s", exc.strerror or exc)
        return 1
    except ConfigError as exc:
        log.error("%s", exc)
        return 1
    announce_ready(daemon)
    reloads = Reloader(daemon)
    loop.add_signal_handler(signal.SIGHUP, reloads.request)
    await stop.wait()
    loop.remove_signal_handler(signal.SIGHUP)
    await reloads.finish()
    grace = daemon.config.shutdown_grace
    if grace > 0:
        log.info("stopping: draining for up to %g s (signal again to stop at once)", grace)
        drain = loop.create_task(daemon.drain(grace))
        cut_short = loop.create_task(now.wait())
        await asyncio.wait([drain, cut_short], return_when=asyncio.FIRST_COMPLETED)
        if not drain.done():
            log.warning("second signal: stopping now")
        drain.cancel()
        cut_short.cancel()
        await asyncio.gather(drain, cut_short, return_exceptions=True)
    log.info("stopping: closing listeners, pipes and open streams")
    await daemon.stop()
    log.info("stopped")
    return 0


READY_PREFIX = "EDGERQ_READY "


def announce_ready(daemon: ServiceConsumer | ServiceProvider) -> None:
    """One line on stdout, ``EDGERQ_READY {json}``, once every port is bound (again
    after each reload): the ports it bound, for whoever started it (a configured
    port 0 is any free one). Logs go to stderr, so stdout carries only these lines."""
    line = READY_PREFIX + json.dumps(daemon.bound(), sort_keys=True)
    try:
        print(line, flush=True)
    except (OSError, ValueError, AttributeError) as exc:  # stdout closed, or none at all
        log.debug("ready line not written (%s): %s", exc, line)


class Reloader:
    """SIGHUP: re-read the daemon's config file and apply it, one reload at a time.
    An invalid file is refused with its error and the running config stays."""

    def __init__(self, daemon: ServiceConsumer | ServiceProvider) -> None:
        self.daemon = daemon
        self._task: asyncio.Task[None] | None = None
        self._again = False

    def request(self) -> None:
        if self._task is not None and not self._task.done():
            self._again = True  # apply the newest file once this reload is done
            return
        self._task = asyncio.get_running_loop().create_task(self._reload())

    async def _reload(self) -> None:
        while True:
            self._again = False
            path = self.daemon.config.path
            log.info("SIGHUP: reloading %s", path)
            try:
                if isinstance(self.daemon, ServiceConsumer):
                    await self.daemon.reload(load_consumer(path))
                else:
                    await self.daemon.reload(load_provider(path))
                announce_ready(self.daemon)
            except ConfigError as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
            except OSError as exc:
                log.error(
                    "reload refused, the running configuration stays: %s", exc.strerror or exc
                )
            except Exception:
                log.exception("reload failed; the running configuration stays")
            if not self._again:
                return

    async def finish(self) -> None:
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    if args.command == "status":
        from edgerq.cli.status import show_status

        return show_status(args.url)
    if args.command == "pki":
        return pki.run(args)
    try:
        if args.command in ("check", "fingerprint"):
            config = load_any(args.config)
        elif args.command == "sc":
            config = load_consumer(args.config)
        else:
            config = load_provider(args.config)
    except ConfigError as exc:
        print(f"edgerq: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    if args.command == "check":
        print(describe(config))
        print("configuration is valid")
        return 0
    if args.command == "fingerprint":
        return _fingerprint(config)
    _tune_allocator()
    loop_kind = _install_uvloop()
    log.info(
        "edgerq %s %s starting from %s (%s, %s)",
        __version__,
        args.command,
        args.config,
        loop_kind,
        compiled.describe(),
    )
    oslimits.raise_open_files_limit()
    return asyncio.run(_run_daemon(config))


def main() -> None:
    sys.exit(run())


def main_sc() -> None:
    sys.exit(run(["sc", *sys.argv[1:]]))


def main_sp() -> None:
    sys.exit(run(["sp", *sys.argv[1:]]))
