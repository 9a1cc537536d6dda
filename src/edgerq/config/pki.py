"""``edgerq pki``: each host makes its own key; only public material crosses.

The public host and the private site each run ``edgerq pki key`` for
themselves. The private key never leaves the host that made it; what the
other side needs is the certificate (for stunnel's ``CAfile``, or the SP's
``<ca_file>``) or its SHA-256 fingerprint (``<server_fingerprint>``), plus
the pipe token, which ``edgerq pki token`` makes on the public host.

``edgerq pki export`` copies files into the folder that is carried to the
other host and refuses anything that holds a private key, so a slip of the
finger cannot ship one.

    edgerq pki key NAME --out DIR [--prefix P]   DIR/P-key.pem (0600), DIR/P-cert.pem
    edgerq pki token FILE            a new random pipe token (0600)
    edgerq pki show FILE...          subject, names, expiry, SHA-256 fingerprint
    edgerq pki export DIR FILE...    copy certificates and tokens only into DIR
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import shutil
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 3650

PRIVATE_MARKER = b"PRIVATE KEY-----"


class PkiError(Exception):
    """A refusal with a message for the operator (exit status 1)."""


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} exists: keep it, or pass --force to replace it") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _certificate(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Self-signed, end entity (``CA:FALSE``), no extended key usage: stunnel trusts
    it as the peer's ``CAfile`` and qh3 takes it as the SC's own and as the SP's
    ``<ca_file>`` (see ``edgerq.tls``). Its subject carries a random serial and it
    has key identifiers, so that a ``CAfile`` holding the old and the new
    certificate of one name during a rotation picks the right one (OpenSSL finds
    trust anchors by subject)."""
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    serial = x509.random_serial_number()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"[:16]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder(
            issuer_name=subject,
            subject_name=subject,
            public_key=public,
            serial_number=serial,
            not_valid_before=now - datetime.timedelta(minutes=5),
            not_valid_after=now + datetime.timedelta(days=VALID_DAYS),
        )
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_key(name: str, out: Path, force: bool = False, prefix: str | None = None) -> Path:
    """A P-256 key (mode 0600) and a self-signed certificate for ``name`` (a DNS
    name or an IP address) in ``out``; returns the certificate's path."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or name
    key_path, cert_path = out / f"{prefix}-key.pem", out / f"{prefix}-cert.pem"
    if not force and (key_path.exists() or cert_path.exists()):
        raise PkiError(f"{key_path} or {cert_path} exists: keep them, or pass --force")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, pem, force=True)
    cert_path.write_bytes(_certificate(name, key).public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return cert_path


def make_token(path: Path, force: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, (secrets.token_hex(32) + "\n").encode(), force)


def describe_file(path: Path) -> list[str]:
    data = path.read_bytes()
    if PRIVATE_MARKER in data:
        raise PkiError(f"{path} holds a private key: it must stay on this host")
    certs = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
    if not certs:
        return [f"{path}: not a certificate ({len(data.strip())} bytes; a token?)"]
    lines = []
    for cert in certs:
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            alt = ", ".join(str(n.value) for n in names)
        except x509.ExtensionNotFound:
            alt = "-"
        lines.append(
            f"{path}: {cert.subject.rfc4514_string()}, names {alt}, "
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, SHA-256 {fingerprint(cert)}"
        )
    return lines


def export(dest: Path, files: list[Path]) -> list[Path]:
    """Copy ``files`` into ``dest``, refusing (before copying anything) any that
    holds a private key."""
    for path in files:
        if PRIVATE_MARKER in path.read_bytes():
            raise PkiError(f"{path} holds a private key: refusing to export it (nothing copied)")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        target = dest / path.name
        shutil.copyfile(path, target)
        target.chmod(0o600 if b"CERTIFICATE-----" not in path.read_bytes() else 0o644)
        copied.append(target)
    return copied


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pki = sub.add_parser(
        "pki",
        help="make this host's key and certificate, the pipe token; show and export them",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    cmds = pki.add_subparsers(dest="pki_command", required=True, metavar="ACTION")
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
