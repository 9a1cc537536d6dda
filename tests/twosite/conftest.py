"""Fixtures of the two-site suite: the production deployment (deploy/public,
deploy/private) as separate Compose projects on this machine, set up the way
docs/production.md tells an operator to.

- Each "host" is its own copy of the repository in a temporary folder; the
  only thing they share is the Docker network "internet" (internal: no way
  out), standing in for the internet. The public host is edge.example.test
  there; the private site publishes nothing.
- Keys are made on their own host (deploy/pki); only the files the docs name
  cross, through a "transfer" folder: the SC's certificate and the token one
  way, the SP's certificate the other way.

The ``deployment`` fixture does all of that once per session (images built,
both projects up and healthy) and removes it all at the end; the tests act on
it in file order (test_10 ... test_40). Run by ``make two-site-test``, which
bootstraps Docker first; ``pytest tests/twosite -m twosite -s`` once Docker
answers.

Environment: EDGERQ_COMPOSE=v1|v2 (as scripts/compose), TWOSITE_CARRIER=tcp
(stunnel, the default) or udp (QUIC), TWOSITE_KEEP=1 leaves both projects
running, TWOSITE_LOAD_WORKERS (4), TWOSITE_PREFIX (edgerq-2s: the projects',
network's and containers' names).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from tests.twosite.harness import (
    PRIVATE_SITES,
    SUMMARY,
    Deployment,
    Load,
    Settings,
    Site,
    compose_command,
    docker_answers,
    run,
    say,
)


def pytest_configure(config: pytest.Config) -> None:
    try:
        Settings.from_env()
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.section("two-site summary")
        for what, line in SUMMARY.items():
            terminalreporter.write_line(f"{what}: {line}")


@pytest.fixture(scope="session")
def settings() -> Settings:
    return Settings.from_env()


_interrupted: list[int] = []
"""The signals that interrupted the run (then it counts as failed: logs are shown)."""


def _interrupt(signum: int, frame: FrameType | None) -> None:
    _interrupted.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def deployment(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Deployment]:
    """Images built, each host's copy, keys, the exchange, both projects up and healthy."""
    if not docker_answers():
        pytest.fail("no Docker engine answers (make two-site-test bootstraps one)")
    compose_cmd = compose_command(settings.compose)
    shown = run([*compose_cmd, "version"], timeout=60).stdout.splitlines()
    compose_version = shown[0] if shown else " ".join(compose_cmd)
    say(f"compose: {compose_version}")
    SUMMARY["set-up"] = f"carrier {settings.carrier}, {compose_version}"
    # INT and TERM end the run with the clean-up below (the script's trap)
    previous = {s: signal.signal(s, _interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    d = Deployment.create(settings, compose_cmd)
    failed = False
    try:
        d.remove_leftovers()
        d.build_images()
        d.make_hosts()
        d.set_up_public()
        for site in d.privates:
            d.set_up_private(site)
        for site in d.privates:
            d.exchange(site)
        d.up(d.public)  # the public host first
        for site in d.privates:
            d.up(site)
        say("all healthy")
        yield d
    except BaseException:
        failed = True
        raise
    finally:
        failed = failed or request.session.testsfailed > 0 or bool(_interrupted)
        d.tear_down(failed)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        say(f"done ({'failed' if failed else 'passed'})")


@pytest.fixture(scope="module", params=[s.name for s in PRIVATE_SITES])
def private(request: pytest.FixtureRequest, deployment: Deployment) -> Site:
    """Each private site in turn."""
    return deployment.site(str(request.param))


@pytest.fixture()
def load(deployment: Deployment) -> Iterator[Load]:
    """The load client; removed after the test whatever happened."""
    client = Load(deployment)
    try:
        yield client
    finally:
        client.remove()
