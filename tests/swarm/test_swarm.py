"""deploy/swarm/stack.yml on a one-node swarm, under steady load.

3 SC replicas and 2 SP replicas; a client container spreads requests over
every SC task (``tests/swarm/loadclient.py``). First every SC replica must
serve, counted from its own metrics; then, one after another under the same
load: kill an SC task's container, kill an SP task's container, a rolling
restart (``docker service update --force``) of the SCs and of the SPs, and
``docker service scale`` of both up and down. For each event it prints the
requests that failed and the seconds until every SC replica served again.

What must hold: a request fails only if it touched what the event took away
(the killed or removed SC replica's address; for a killed SP, no more than
the requests in flight when it died) or a replica the event brought, which
Swarm's DNS lists before its ports are open (counted and printed apart); a
rolling update or a scale of the SPs loses no request at all (SIGTERM drains,
new streams move to the other SP).

Run by ``make swarm-test`` (CI does); bootstraps Docker like the Compose
suite, joins or creates a swarm (``docker swarm init --advertise-addr
127.0.0.1``) and leaves a swarm it created.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edgerq import __version__

pytestmark = pytest.mark.swarm

ROOT = Path(__file__).resolve().parents[2]
STACK = "edgerqci"
SC, SP = f"{STACK}_sc", f"{STACK}_sp"
TAG = os.environ.get("EDGERQ_SWARM_TAG", __version__)
"""The tag the images are built under (default: the package version)."""
IMAGE = f"edgerq:{TAG}"
WEB_IMAGE = f"edgerq-webserver:{TAG}"
CONCURRENCY = 8
SC_REPLICAS, SP_REPLICAS = 3, 2
RECOVERY_LIMIT = 90.0
"""Seconds an event may take until every SC replica serves again before the test fails."""


def docker(*args: str, timeout: float = 300, check: bool = True) -> str:
    result = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


@pytest.fixture(scope="module")
def swarm() -> Iterator[None]:
    if (
        shutil.which("docker") is None
        or subprocess.run(
            ["docker", "info"], capture_output=True, check=False, timeout=60
        ).returncode
    ):
        pytest.skip("no Docker engine answers (make swarm-test bootstraps one)")
    created = docker("info", "--format", "{{.Swarm.LocalNodeState}}") != "active"
    if created:
        docker("swarm", "init", "--advertise-addr", "127.0.0.1")
    try:
        yield
    finally:
        if created:
            docker("swarm", "leave", "--force", check=False)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SC's key and certificate (name "sc", which the SPs verify) and the token,
    made by ``edgerq pki`` as an operator would (EDGERQ_SWARM_SECRETS: use a folder
    that already has them)."""
    given = os.environ.get("EDGERQ_SWARM_SECRETS")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("swarm-secrets")
    edgerq = [sys.executable, "-m", "edgerq"]
    subprocess.run([*edgerq, "pki", "key", "sc", "--out", str(out)], check=True, timeout=60)
    subprocess.run([*edgerq, "pki", "token", str(out / "pipe-token")], check=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def stack(swarm: None, secrets: Path) -> Iterator[None]:
    docker("build", "-q", "-t", IMAGE, str(ROOT), timeout=1200)
    docker("build", "-q", "-t", WEB_IMAGE, str(ROOT / "sample_webserver"), timeout=1200)
    env = {
        **os.environ,
        "EDGERQ_IMAGE": IMAGE,
        "EDGERQ_WEBSERVER_IMAGE": WEB_IMAGE,
        "EDGERQ_SECRETS": str(secrets),
        "EDGERQ_SC_REPLICAS": str(SC_REPLICAS),
        "EDGERQ_SP_REPLICAS": str(SP_REPLICAS),
    }
    subprocess.run(
        ["docker", "stack", "deploy", "-c", "stack.yml", STACK],
        cwd=ROOT / "deploy" / "swarm",
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    try:
        yield
    finally:
        docker("stack", "rm", STACK, check=False)
        deadline = time.monotonic() + 60  # networks go last; wait so a rerun can deploy
        while time.monotonic() < deadline and docker(
            "network", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={STACK}"
        ):
            time.sleep(1)


@dataclass
class Client:
    """The load client's container and what it wrote so far."""

    folder: Path
    container: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    _offset: int = 0

    def read(self) -> None:
        path = self.folder / "requests.jsonl"
        if not path.exists():
            return
        with path.open(encoding="utf-8") as fh:
            fh.seek(self._offset)
            while line := fh.readline():
                if not line.endswith("\n"):
                    break  # a line still being written
                self._offset += len(line.encode())
                record = json.loads(line)
                (self.metrics if "metrics" in record else self.requests).append(record)

    def addresses(self) -> list[str]:
        """The SC tasks the client sees now."""
        return sorted(self.metrics[-1]["sc"]) if self.metrics else []


@pytest.fixture(scope="module")
def client(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    folder = tmp_path_factory.mktemp("swarm-client")
    folder.chmod(0o777)
    c = Client(folder)
    c.container = docker(
        "run", "-d", "--rm", "--network", f"{STACK}_front", "--read-only",
        "--user", "10001:10001",
        "-v", f"{ROOT / 'tests' / 'swarm' / 'loadclient.py'}:/loadclient.py:ro",
        "-v", f"{folder}:/out",
        "--entrypoint", "python", IMAGE, "/loadclient.py",
        "--concurrency", str(CONCURRENCY), "--duration", "900",
        "--out", "/out/requests.jsonl", "--stop-file", "/out/stop",
    )  # fmt: skip
    try:
        yield c
    finally:
        (folder / "stop").touch()
        docker("wait", c.container, timeout=60, check=False)
        docker("rm", "-f", c.container, check=False)


def wait(client: Client, predicate: Callable[[], bool], what: str, limit: float) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(0.5)
        client.read()


def replicas(service: str) -> tuple[int, int]:
    """(running, desired) as ``docker service ls`` shows them."""
    shown = docker("service", "ls", "--filter", f"name={service}", "--format", "{{.Replicas}}")
    running, desired = shown.split()[0].split("/")
    return int(running), int(desired)


def served_since(client: Client, since: float) -> set[str]:
    return {r["sc"] for r in client.requests if r["error"] is None and r["t0"] >= since}


def all_serving(client: Client, since: float, sc_count: int) -> bool:
    addresses = client.addresses()
    return (
        replicas(SC) == (sc_count, sc_count)
        and len(addresses) == sc_count
        and set(addresses) <= served_since(client, since)
    )


def task_containers(service: str) -> list[str]:
    return docker("ps", "-q", "--filter", f"label=com.docker.swarm.service.name={service}").split()


def front_address(container: str) -> str | None:
    """The container's address on the front network; None once it has stopped."""
    found = docker("inspect", "-f", "{{json .NetworkSettings.Networks}}", container, check=False)
    front = (json.loads(found) or {}).get(f"{STACK}_front") if found else None
    return str(front["IPAddress"]) if front else None


@dataclass
class Outcome:
    name: str
    started: float
    failed: int = 0
    failed_elsewhere: int = 0
    """Failures on SC replicas that served before the event and were left by it."""
    failed_new: int = 0
    """Failures on replicas that appeared during the event: a task is in ``tasks.sc``
    from the moment it runs, before its ports are open."""
    recovered_s: float = 0.0
    removed: set[str] = field(default_factory=set)
    serving_before: set[str] = field(default_factory=set)


def test_every_replica_serves_and_survives_kills_updates_and_scaling(client: Client) -> None:
    wait(
        client,
        lambda: replicas(SP) == (SP_REPLICAS, SP_REPLICAS) and all_serving(client, 0, SC_REPLICAS),
        "every SC replica to serve",
        180,
    )
    # every replica serves, counted from its own metrics, with a pipe from every SP
    wait(
        client,
        lambda: all(
            m is not None and m["served"] > 0 and m["pipes"] == SP_REPLICAS
            for m in client.metrics[-1]["sc"].values()
        ),
        "every SC's metrics to show requests served and a pipe from each SP",
        60,
    )
    first = client.metrics[-1]["sc"]
    print(f"\nevery SC replica serves: {json.dumps(first)}")
    # each SC task's service port is also published on the node (mode: host)
    for container in task_containers(SC):
        published = docker("port", container, "3000/tcp").splitlines()[0].rsplit(":", 1)[1]
        body = os.urandom(1000)
        request = urllib.request.Request(f"http://127.0.0.1:{published}/echo", data=body)
        with urllib.request.urlopen(request, timeout=15) as answer:
            assert answer.read() == body

    outcomes: list[Outcome] = []
    sc_count = SC_REPLICAS

    def event(name: str, action: Callable[[], set[str]], sc_after: int) -> None:
        nonlocal sc_count
        started = time.time()
        outcome = Outcome(name, started, serving_before=set(client.addresses()))
        outcome.removed = action()
        sc_count = sc_after
        wait(client, lambda: all_serving(client, started, sc_count), f"recovery from {name}",
             RECOVERY_LIMIT)  # fmt: skip
        outcome.recovered_s = max(
            min(r["t1"] for r in client.requests
                if r["error"] is None and r["sc"] == a and r["t0"] >= started)
            for a in client.addresses()
        ) - started  # fmt: skip
        time.sleep(3)  # steady load before the next event
        client.read()
        outcomes.append(outcome)

    def kill(service: str) -> set[str]:
        victim = task_containers(service)[0]
        address = front_address(victim) if service == SC else ""
        docker("kill", victim)
        return {address} if address else set()

    def addresses_of(service: str) -> set[str]:
        found = (front_address(c) for c in task_containers(service))
        return {a for a in found if a is not None}  # None: stopped since the listing

    def update(service: str) -> set[str]:
        before = addresses_of(service) if service == SC else set()
        docker("service", "update", "--force", "--detach=false", "--update-delay", "1s",
               "--update-monitor", "3s", service, timeout=300)  # fmt: skip
        return before - addresses_of(service) if service == SC else set()

    def scale(service: str, count: int) -> set[str]:
        before = addresses_of(service) if service == SC else set()
        docker("service", "scale", "--detach=false", f"{service}={count}", timeout=300)
        if service != SC:
            return set()
        # The scale returns once the swarm has converged, while a removed task's
        # container may still be draining: it is removed only when it has stopped.
        after = addresses_of(service)
        deadline = time.time() + 60
        while len(after) > count and time.time() < deadline:
            time.sleep(0.5)
            after = addresses_of(service)
        return before - after

    event("kill one SC task", lambda: kill(SC), SC_REPLICAS)
    event("kill one SP task", lambda: kill(SP), SC_REPLICAS)
    event("rolling update of the SCs", lambda: update(SC), SC_REPLICAS)
    event("rolling update of the SPs", lambda: update(SP), SC_REPLICAS)
    event("scale SCs 3 -> 4", lambda: scale(SC, 4), 4)
    event("scale SCs 4 -> 3", lambda: scale(SC, 3), 3)
    event("scale SPs 2 -> 3", lambda: scale(SP, 3), 3)
    event("scale SPs 3 -> 2", lambda: scale(SP, 2), 3)
    (client.folder / "stop").touch()
    docker("wait", client.container, timeout=60, check=False)
    client.read()

    # A request belongs to the first event that began while it was in flight (an SP
    # killed under it is that event's, even if its pipe's loss is noticed only during
    # a later event), else to the last event that began before it started.
    def owner(request: dict[str, Any]) -> Outcome | None:
        during = [o for o in outcomes if request["t0"] <= o.started <= request["t1"]]
        if during:
            return during[0]
        earlier = [o for o in outcomes if o.started < request["t0"]]
        return earlier[-1] if earlier else None

    owners = [(owner(r), r) for r in client.requests]
    for outcome in outcomes:
        window = [r for o, r in owners if o is outcome]
        failures = [r for r in window if r["error"] is not None]
        outcome.failed = len(failures)
        stayed = outcome.serving_before - outcome.removed
        outcome.failed_elsewhere = sum(1 for r in failures if r["sc"] in stayed)
        outcome.failed_new = sum(1 for r in failures if r["sc"] not in outcome.serving_before)
        print(f"  {outcome.name}: {len(window)} requests, {outcome.failed} failed "
              f"({outcome.failed_elsewhere} on replicas the event left, {outcome.failed_new} "
              f"on new ones), every replica serving again after "
              f"{outcome.recovered_s:.1f} s")  # fmt: skip
        shown = failures[:3] + [r for r in failures[3:] if r["sc"] not in outcome.removed][:5]
        for r in shown:
            print(f"    {r['sc']} at +{r['t0'] - outcome.started:.1f} s: {r['error']}")

    total = len(client.requests)
    print(f"  in all: {total} requests, {sum(o.failed for o in outcomes)} failed")
    by_name = {o.name: o for o in outcomes}
    for name in ("kill one SC task", "rolling update of the SCs", "scale SCs 4 -> 3"):
        assert by_name[name].failed_elsewhere == 0, name
    assert by_name["kill one SP task"].failed <= CONCURRENCY
    assert by_name["scale SCs 3 -> 4"].failed_elsewhere == 0
    for name in ("rolling update of the SPs", "scale SPs 3 -> 2", "scale SPs 2 -> 3"):
        assert by_name[name].failed == 0, name
