"""The command line's grammar: ``edgerq [--log-level L] COMMAND ...``."""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

from edgerq import __version__, compiled
from edgerq.cli import pki

LEVELS = ("debug", "info", "warning", "error")


def common_options(parser: argparse.ArgumentParser, *, top: bool, version: str) -> None:
    """``--version``, ``--log-level`` and ``--log-format``, which every command takes.

    Accepted before and after the command; a subcommand must not reset the value
    given before it, hence SUPPRESS as its default."""
    parser.add_argument("--version", action="version", version=version)
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
    common_options(parser, top=True, version=version)
    subcommand = partial(common_options, top=False, version=version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status = sub.add_parser(
        "status",
        help="summarize a running daemon from its admin endpoint",
        description="Print pipes, services, open streams, bytes and uptime of a running SC "
        "or SP, read from its <admin> endpoint.",
    )
    status.add_argument(
        "url", metavar="URL", help="the admin endpoint: http://127.0.0.1:9100 or 127.0.0.1:9100"
    )
    subcommand(status)
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
        subcommand(cmd)
    pki.add_parser(sub, subcommand)
    return parser
