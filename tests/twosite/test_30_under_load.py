"""Token rotation, then an SC upgrade (recreated container), each under load
from the internet side (tests/twosite/load.py: TWOSITE_LOAD_WORKERS threads,
a new HTTPS connection per request, 50 ms apart), with the failed requests
printed. Neither asserts a bound on the failures (docs/production.md reports
the figures); each asserts that the operation did what it is for.
"""

from __future__ import annotations

import filecmp
import time

import pytest

from tests.twosite.harness import (
    FRONT_URL,
    SUMMARY,
    TEST_TIMEOUT,
    Deployment,
    Load,
    LoadResult,
    say,
)

pytestmark = [pytest.mark.twosite, pytest.mark.timeout(TEST_TIMEOUT)]

AFTER = f"""
import ssl, urllib.request
ctx = ssl.create_default_context(cafile="/ca.pem")
print(urllib.request.urlopen("{FRONT_URL}/after", timeout=20, context=ctx).read()[:200].decode())
"""


def report(what: str, result: LoadResult) -> None:
    """Print the load's counts (requests, failed, their spread, first errors)."""
    say(f"{what}: {result.line}")
    SUMMARY[what] = result.line


def check_load(what: str, result: LoadResult) -> None:
    """The load ran all along: stopped by the test, not its own time limit."""
    assert result.stopped == "signal", f"{what}: the load stopped by itself ({result.stopped})"
    assert result.requests > 0, f"{what}: the load made no request at all"


def test_token_rotation_under_load(deployment: Deployment, load: Load) -> None:
    """New token at the SC, SIGHUP; copied over, SIGHUP the SP (docs/production.md)."""
    pub = deployment.public
    workers = deployment.settings.workers
    say(
        f"token rotation under load ({workers} workers): new token at the SC, SIGHUP; "
        "copied over, SIGHUP the SP"
    )
    before = (pub.secrets / "pipe-token").read_bytes()
    load.start()
    pub.pki("token", "pipe-token", "--force")
    pub.pki("export", "to-private", "pipe-token")
    for site in deployment.privates:
        sent = deployment.to_private(site) / "pipe-token"
        sent.write_bytes((pub.secrets / "to-private" / "pipe-token").read_bytes())
    pub.compose("kill", "-s", "HUP", "sc")
    time.sleep(2)
    for site in deployment.privates:
        # in place: the bind mount keeps seeing the file (cp does the same)
        installed = site.secrets / "pipe-token"
        installed.write_bytes((deployment.to_private(site) / "pipe-token").read_bytes())
        site.compose("kill", "-s", "HUP", "sp")
    time.sleep(8)
    result = load.stop()
    report("token rotation", result)

    after = (pub.secrets / "pipe-token").read_bytes()
    assert after != before, "the public host's token did not change"
    for site in deployment.privates:
        assert filecmp.cmp(
            pub.secrets / "pipe-token", site.secrets / "pipe-token", shallow=False
        ), f"the token files differ after rotation (public, {site.name})"
    wanted = "reload: new pipes authenticate with the new token"
    assert wanted in pub.logs("sc"), f"the SC did not log the new token ({wanted!r})"
    check_load("token rotation", result)


def test_sc_upgrade_under_load(deployment: Deployment, load: Load) -> None:
    """The sc container recreated (``up -d --force-recreate --no-deps sc``); then the
    new pipe, authenticated with the rotated token, still carries answers."""
    pub = deployment.public
    say("SC upgrade under load: the sc container recreated (up -d --force-recreate --no-deps sc)")
    load.start()
    recreated = pub.compose("up", "-d", "--no-deps", "--force-recreate", "sc", check=False)
    assert recreated.returncode == 0, f"recreating sc failed: {recreated.stderr.strip()[-2000:]}"
    for site in deployment.sites:
        site.wait_healthy()
    time.sleep(5)
    result = load.stop()
    report("SC upgrade", result)

    try:
        body = deployment.client(AFTER)
    except AssertionError as exc:
        raise AssertionError(f"no answer after the upgrade: {exc}") from None
    assert body.startswith("private site"), f"unexpected answer after the upgrade: {body!r}"
    check_load("SC upgrade", result)
