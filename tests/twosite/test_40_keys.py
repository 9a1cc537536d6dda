"""Keys stayed home: no private key made on one host exists anywhere on
another host or in the transfer folder, and only the files the docs name
crossed (after the rotation: the new token went the same way)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.twosite.harness import SITE_NAMES, TEST_TIMEOUT, Deployment, say

pytestmark = [pytest.mark.twosite, pytest.mark.timeout(TEST_TIMEOUT)]

MARK = b"PRIVATE KEY-----"


def files(*folders: Path) -> list[Path]:
    """Every regular file under the folders (symbolic links not followed)."""
    return sorted(p for f in folders for p in f.rglob("*") if p.is_file() and not p.is_symlink())


def private_keys(folder: Path) -> list[Path]:
    return [p for p in files(folder) if MARK in p.read_bytes()]


def fingerprint(key: Path) -> bytes:
    """The first 64 characters of the key's base64 body (its first PEM line)."""
    lines = key.read_bytes().splitlines()
    return b"".join(line for line in lines if b"-----" not in line)[:64]


def test_only_the_files_the_docs_name_cross(deployment: Deployment) -> None:
    """The SC's certificate and the token to each private site, its certificate back
    (tcp), and the front's certificate for the clients."""
    expected = ["front-cert.pem"]
    for site in deployment.privates:
        expected += [f"{site.name}/to-private/pipe-token", f"{site.name}/to-private/sc-cert.pem"]
        if deployment.carrier == "tcp":
            expected.append(f"{site.name}/to-public/sp-cert.pem")
    crossed = deployment.transferred()
    assert crossed == sorted(expected), f"the transfer folder holds {crossed}, not {expected}"


@pytest.mark.parametrize("host", SITE_NAMES)
def test_private_keys_stay_on_their_host(deployment: Deployment, host: str) -> None:
    site = deployment.site(host)
    keys = private_keys(site.secrets)
    # the public host always has the front's key and the SC's; a private site has
    # its stunnel key over tcp, none over udp (it pins the SC's certificate)
    if site.role == "public" or deployment.carrier == "tcp":
        assert keys, f"no private key found on the {host} side ({site.secrets})"
    elsewhere = [s.host for s in deployment.sites if s is not site] + [deployment.transfer]
    for key in keys:
        body = fingerprint(key)
        assert body, f"private key {key} of the {host} side has no body"
        found = [p for p in files(*elsewhere) if body in p.read_bytes()]
        assert not found, f"private key {key} of the {host} side found elsewhere: {found}"
    others = ", ".join(s.name for s in deployment.sites if s is not site)
    say(f"{len(keys)} private key(s) of the {host} side: none on the {others} side, "
        "none in transfer")  # fmt: skip


def test_no_private_key_in_the_transfer_folder(deployment: Deployment) -> None:
    found = private_keys(deployment.transfer)
    assert not found, f"a private key is in the transfer folder: {found}"
