"""``edgerq pki``: the command that makes keys, certificates and tokens (``config.pki``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from edgerq.config import pki as keys
from edgerq.config.pki import PkiError, describe_file, export, make_key, make_token


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    common: Callable[[argparse.ArgumentParser], None],
) -> None:
    """``pki`` and its actions; ``common`` adds the options every command takes."""
    command = sub.add_parser(
        "pki",
        help="make this host's key and certificate, the pipe token; show and export them",
        description=keys.__doc__.split("\n\n")[1] if keys.__doc__ else None,
    )
    common(command)
    cmds = command.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
    key = cmds.add_parser("key", help="a new key and self-signed certificate for NAME")
    key.add_argument("name", help="DNS name or IP address the certificate is for")
    key.add_argument("--out", type=Path, default=Path("."), help="folder (default: .)")
    key.add_argument("--force", action="store_true", help="replace existing files")
    key.add_argument("--prefix", help="file names PREFIX-key.pem, PREFIX-cert.pem (default: NAME)")
    token = cmds.add_parser("token", help="a new random pipe token in FILE (mode 0600)")
    token.add_argument("file", type=Path)
    token.add_argument("--force", action="store_true", help="replace an existing file")
    show = cmds.add_parser("show", help="names, expiry and fingerprint of certificates")
    show.add_argument("files", type=Path, nargs="+", metavar="FILE")
    exp = cmds.add_parser("export", help="copy certificates and tokens (never keys) into DIR")
    exp.add_argument("dest", type=Path, metavar="DIR")
    exp.add_argument("files", type=Path, nargs="+", metavar="FILE")
    for action in (key, token, show, exp):
        common(action)


def run(args: argparse.Namespace) -> int:
    try:
        if args.pki_command == "key":
            cert_path = make_key(args.name, args.out, args.force, args.prefix)
            key_path = args.out / f"{args.prefix or args.name}-key.pem"
            print(f"key:         {key_path} (stays on this host)")
            for line in describe_file(cert_path):
                print(f"certificate: {line}")
        elif args.pki_command == "token":
            make_token(args.file, args.force)
            print(f"token: {args.file} (mode 0600; copy it to the other host's token file)")
        elif args.pki_command == "show":
            for path in args.files:
                print("\n".join(describe_file(path)))
        else:
            for path in export(args.dest, args.files):
                print(f"exported {path}")
    except (PkiError, OSError, ValueError) as exc:
        print(f"edgerq pki: {exc}", file=sys.stderr)
        return 1
    return 0
