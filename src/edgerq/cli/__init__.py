"""Command line: ``edgerq sc|sp|check|fingerprint CONFIG``, ``edgerq status``, ``edgerq pki``.

``parser`` holds the grammar, ``runner`` runs a daemon, ``status`` and ``pki``
the two commands that run none.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from edgerq import __version__, compiled
from edgerq.cli import pki
from edgerq.cli.parser import build_parser
from edgerq.cli.runner import READY_PREFIX, announce_ready, install_uvloop, run_daemon
from edgerq.config import ConsumerConfig, ProviderConfig, load_any, load_consumer, load_provider
from edgerq.config.describe import describe
from edgerq.errors import ConfigError
from edgerq.runtime import oslimits
from edgerq.runtime.allocator import tune_allocator
from edgerq.runtime.logs import setup_logging

__all__ = [
    "READY_PREFIX",
    "announce_ready",
    "describe",
    "install_uvloop",
    "main",
    "main_sc",
    "main_sp",
    "run",
]

log = logging.getLogger("edgerq")


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
        return fingerprint(config)
    tune_allocator()
    loop_kind = install_uvloop()
    log.info(
        "edgerq %s %s starting from %s (%s, %s)",
        __version__,
        args.command,
        args.config,
        loop_kind,
        compiled.describe(),
    )
    oslimits.raise_open_files_limit()
    return asyncio.run(run_daemon(config))


def fingerprint(config: ConsumerConfig | ProviderConfig) -> int:
    """``edgerq fingerprint``: the SHA-256 of each udp listener's certificate."""
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


def main() -> None:
    sys.exit(run())


def main_sc() -> None:
    sys.exit(run(["sc", *sys.argv[1:]]))


def main_sp() -> None:
    sys.exit(run(["sp", *sys.argv[1:]]))
