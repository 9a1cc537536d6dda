"""The two-site suite's machinery: Docker calls with timeouts, a ``Site`` (one
host: its own copy of the repository and the Compose project in its deploy
folder), the ``Deployment`` of a public host and its private sites, set up the
way docs/production.md tells an operator, and the load client.

The fixtures in conftest.py build one ``Deployment``; the tests only read it
and act on it. A private site is one entry in ``PRIVATE_SITES``: another entry
gets its own folder, project, key and transfer folder, its certificate joins
stunnel-sc's CAfile, and the isolation and key tests run for it too. Its own
services in consumer.xml and its own token (per-site credentials) are left to
the change that adds it; the front's service is served by the first site.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BASE_IMAGE = "python:3.11-slim-bookworm"
"""The image of the client, probe and load containers (scripts/docker-bootstrap provides it)."""
UID = GID = 10001
"""The containers' user: secrets/ and what is installed in it belong to it."""
DOCKER_TIMEOUT = 300.0
"""Seconds any docker or compose call may take (the script's ``timeout 300``)."""
BUILD_TIMEOUT = 1200.0
HEALTHY_LIMIT = 150.0
"""Seconds a project may take until every container runs and is healthy."""
CLIENT_TIMEOUT = 120.0
"""Seconds a client or probe container may take, from ``docker run`` to its exit."""
TEST_TIMEOUT = 1800
"""pytest-timeout for each test, its fixtures' setup included (images, both projects up)."""
PUBLIC_NAME = "edge.example.test"
"""The public host's pipe address on "internet" (EDGERQ_PUBLIC_NAME)."""
FRONT_URL = "https://www.example.test:8443"
"""The front as clients on "internet" reach it."""
LABEL = "org.edgerq.twosite"
"""Every container the suite runs itself carries this label (value: the prefix)."""

Carrier = Literal["tcp", "udp"]
Role = Literal["public", "private"]

_T0 = time.monotonic()
SUMMARY: dict[str, str] = {}
"""What the tests measured, printed again at the end of the run (conftest.py)."""


def say(message: str) -> None:
    """A progress line, as the script printed them: ``[two-site  12s] ...``."""
    print(f"[two-site {time.monotonic() - _T0:3.0f}s] {message}", file=sys.stderr, flush=True)


def version() -> str:
    """The package version from src/edgerq/__init__.py (read, not imported): the image tag."""
    text = (ROOT / "src" / "edgerq" / "__init__.py").read_text(encoding="utf-8")
    found = re.search(r'^__version__ = "(.*)"', text, re.MULTILINE)
    assert found, "no __version__ in src/edgerq/__init__.py"
    return found.group(1)


# ----------------------------------------------------------------- commands


def run(
    cmd: Sequence[str],
    *,
    timeout: float = DOCKER_TIMEOUT,
    check: bool = True,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a timeout; with ``check`` fail the test with its stderr
    (or when it timed out). Without ``check`` a timeout is exit status 124, as
    with timeout(1): clean-up goes on."""
    try:
        result = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        if not check:
            return subprocess.CompletedProcess(list(cmd), 124, "", f"timed out after {timeout:g} s")
        raise AssertionError(f"`{shlex.join(cmd)}` did not end within {timeout:g} s") from exc
    if check and result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-3000:]
        raise AssertionError(f"`{shlex.join(cmd)}` failed (exit {result.returncode}): {output}")
    return result


def docker(*args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True) -> str:
    """``docker ARGS``: its stdout, stripped."""
    return run(["docker", *args], timeout=timeout, check=check).stdout.strip()


def docker_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return run(["docker", "info"], timeout=60, check=False).returncode == 0


def compose_command(choice: str) -> tuple[str, ...]:
    """Compose v2 (``docker compose``) or v1 (``docker-compose``), as scripts/compose picks."""
    v2 = run(["docker", "compose", "version"], timeout=60, check=False).returncode == 0
    v1 = shutil.which("docker-compose") is not None
    if choice == "v2":
        assert v2, "EDGERQ_COMPOSE=v2, but 'docker compose' does not answer"
        return ("docker", "compose")
    if choice == "v1":
        assert v1, "EDGERQ_COMPOSE=v1, but there is no 'docker-compose'"
        return ("docker-compose",)
    assert choice == "", f"EDGERQ_COMPOSE must be v1 or v2, not {choice!r}"
    assert v2 or v1, (
        "neither 'docker compose' nor 'docker-compose' found (scripts/docker-bootstrap)"
    )
    return ("docker", "compose") if v2 else ("docker-compose",)


def compose_env() -> dict[str, str]:
    """The environment of compose calls: each side's .env names its project and
    files, so the caller's COMPOSE_* must not override them."""
    env = {k: v for k, v in os.environ.items() if k not in _COMPOSE_OVERRIDES}
    env["COMPOSE_INTERACTIVE_NO_CLI"] = "1"
    env["DOCKER_CLI_HINTS"] = "false"
    return env


_COMPOSE_OVERRIDES = ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES")


# ----------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """The suite's knobs, from the environment (the script's, unchanged)."""

    compose: str
    """EDGERQ_COMPOSE: "v1", "v2" or "" (v2 if it answers, else v1)."""
    carrier: Carrier
    """TWOSITE_CARRIER: tcp (stunnel, the default) or udp (QUIC)."""
    keep: bool
    """TWOSITE_KEEP=1: leave both projects (and the work folder) running."""
    workers: int
    """TWOSITE_LOAD_WORKERS: the load client's threads (4)."""
    prefix: str
    """TWOSITE_PREFIX: names of the projects, the network and containers (edgerq-2s)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """The settings, or ValueError naming the variable that is wrong."""
        compose = env.get("EDGERQ_COMPOSE", "")
        if compose not in ("", "v1", "v2"):
            raise ValueError(f"EDGERQ_COMPOSE must be v1 or v2, not {compose!r}")
        carrier = env.get("TWOSITE_CARRIER", "tcp") or "tcp"
        if carrier not in ("tcp", "udp"):
            raise ValueError(f"TWOSITE_CARRIER must be tcp or udp, not {carrier!r}")
        raw_workers = env.get("TWOSITE_LOAD_WORKERS", "4") or "4"
        if not raw_workers.isdigit() or int(raw_workers) < 1:
            raise ValueError(f"TWOSITE_LOAD_WORKERS must be a positive number, not {raw_workers!r}")
        return cls(
            compose=compose,
            carrier="udp" if carrier == "udp" else "tcp",
            keep=env.get("TWOSITE_KEEP", "0") == "1",
            workers=int(raw_workers),
            prefix=env.get("TWOSITE_PREFIX", "edgerq-2s") or "edgerq-2s",
        )


# ----------------------------------------------------------------- a host


@dataclass(frozen=True)
class PrivateSpec:
    """What makes one private site: its folder and project name, and the name
    in its stunnel certificate (tcp)."""

    name: str
    identity: str


PRIVATE_SITES: tuple[PrivateSpec, ...] = (PrivateSpec(name="private", identity="site-a"),)
"""The private sites, each its own host. The front's service is the first one's."""
SITE_NAMES: tuple[str, ...] = ("public", *(s.name for s in PRIVATE_SITES))


@dataclass
class Site:
    """One host: its own copy of the repository in the work folder (as ``git
    clone`` would make it) and the Compose project in ``deploy/<role>``."""

    name: str
    """Its folder in the work folder and its project's suffix ("public", "private")."""
    role: Role
    host: Path
    """Everything on this host: <work>/<name>; the repository is in host/edgerq."""
    project: str
    compose_cmd: tuple[str, ...]
    carrier: Carrier
    identity: str = ""
    """A private site's name in its certificate (tcp)."""

    @property
    def repo(self) -> Path:
        return self.host / "edgerq"

    @property
    def deploy(self) -> Path:
        return self.repo / "deploy" / self.role

    @property
    def secrets(self) -> Path:
        return self.deploy / "secrets"

    @property
    def services(self) -> tuple[str, ...]:
        """The services that must have a running, healthy container."""
        if self.role == "public":
            return ("sc", "stunnel-sc", "front") if self.carrier == "tcp" else ("sc", "front")
        return ("sp", "stunnel-sp", "web") if self.carrier == "tcp" else ("sp", "web")

    # -------------------------------------------------- files, as an operator edits them

    def clone(self, source: Path = ROOT) -> None:
        """Copy the repository's files (tracked and untracked, not ignored), as
        `git ls-files --cached --others --exclude-standard` lists them. A file
        deleted in the work tree but still tracked is left out, as a commit of
        the work tree would."""
        listed = run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=source,
            timeout=60,
        ).stdout
        for rel in filter(None, listed.split("\0")):
            src = source / rel
            if not src.is_file():
                continue
            dst = self.repo / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)

    def setenv(self, key: str, value: str) -> None:
        """Replace KEY's line of .env, or add it."""
        env = self.deploy / ".env"
        lines = env.read_text(encoding="utf-8").splitlines()
        found = False
        for i, line in enumerate(lines):
            if line.startswith(f"{key}="):
                lines[i] = f"{key}={value}"
                found = True
        if not found:
            lines.append(f"{key}={value}")
        env.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def env_value(self, key: str) -> str:
        """KEY's value in .env (the last line that sets it)."""
        values = [
            line.split("=", 1)[1]
            for line in (self.deploy / ".env").read_text(encoding="utf-8").splitlines()
            if line.startswith(f"{key}=")
        ]
        assert values, f"{self.name}: {key} is not set in .env"
        return values[-1]

    def edit(self, source: str, target: str, replacements: Iterable[tuple[str, str]]) -> None:
        """Write deploy/TARGET from deploy/SOURCE with each (old, new) replaced; each must occur."""
        text = (self.deploy / source).read_text(encoding="utf-8")
        for old, new in replacements:
            assert old in text, f"{self.name}: {source} has no {old!r} to replace"
            text = text.replace(old, new)
        (self.deploy / target).write_text(text, encoding="utf-8")

    def make_secrets(self) -> None:
        """``install -d -m 0700 -o 10001 -g 10001 secrets``."""
        self.install_dir(self.secrets, mode=0o700)

    def install_dir(self, path: Path, mode: int = 0o755) -> None:
        """``install -d -o 10001 -g 10001 PATH`` (the parents must exist)."""
        path.mkdir(exist_ok=True)
        os.chown(path, UID, GID)
        path.chmod(mode)

    def install(self, src: Path, dst: Path, mode: int) -> None:
        """``install -o 10001 -g 10001 -m MODE SRC DST``."""
        self.install_bytes(src.read_bytes(), dst, mode)

    def install_bytes(self, content: bytes, dst: Path, mode: int) -> None:
        dst.write_bytes(content)
        os.chown(dst, UID, GID)
        dst.chmod(mode)

    def pki(self, *args: str) -> str:
        """``../pki ARGS`` in the deploy folder (edgerq pki in the image, no network)."""
        out = run(["../pki", *args], cwd=self.deploy, timeout=120).stdout
        for line in out.splitlines():
            print(f"  {self.name}: {line}", file=sys.stderr, flush=True)
        return out

    # -------------------------------------------------- the Compose project

    def compose(
        self, *args: str, timeout: float = DOCKER_TIMEOUT, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Compose (v1 or v2) in the deploy folder: its .env names the project and files."""
        return run(
            [*self.compose_cmd, *args],
            cwd=self.deploy,
            env=compose_env(),
            timeout=timeout,
            check=check,
        )

    def container(self, service: str) -> str:
        ids = self.compose("ps", "-q", service).stdout.split()
        assert ids, f"{self.name}: no container for service {service}"
        return ids[0]

    def container_ids(self) -> list[str]:
        """All the project's containers, whatever their state (``compose ps -a -q``, asked
        of the engine: docker-compose 1.29 is slow to start, and polling it would take
        CPU from the daemons while they are measured)."""
        return docker(
            "ps", "-a", "-q", "--no-trunc",
            "--filter", f"label=com.docker.compose.project={self.project}",
            "--filter", "label=com.docker.compose.oneoff=False",
            timeout=60,
        ).split()  # fmt: skip

    def states(self) -> dict[str, list[str]]:
        """Each service's containers as "name status/health", all of the project's."""
        ids = self.container_ids()
        if not ids:
            return {}
        fmt = (
            '{{index .Config.Labels "com.docker.compose.service"}} {{.Name}} {{.State.Status}}/'
            "{{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
        )
        shown = run(["docker", "inspect", "-f", fmt, *ids], timeout=60, check=False)
        states: dict[str, list[str]] = {}
        for line in shown.stdout.splitlines():
            service, rest = line.split(" ", 1)
            states.setdefault(service, []).append(rest.lstrip("/"))
        if shown.returncode != 0:  # a container went away between ps and inspect
            states.setdefault("(listing)", []).append("changed while inspected")
        return states

    def wait_healthy(self, limit: float = HEALTHY_LIMIT) -> None:
        """Until every container of the project runs (healthy, where it has a
        health check) and each of ``services`` has one; fail after ``limit`` s."""
        deadline = time.monotonic() + limit
        while True:
            states = self.states()
            pending = [
                line
                for lines in states.values()
                for line in lines
                if not line.endswith((" running/healthy", " running/none"))
            ]
            missing = [s for s in self.services if s not in states]
            if not pending and not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not healthy after {limit:g} s: pending {pending}, "
                    f"no container for {missing}"
                )
            time.sleep(1)

    def logs(self, *services: str) -> str:
        result = self.compose("logs", "--no-color", *services)
        return result.stdout + result.stderr

    def report(self, tail: int = 40) -> None:
        """State and recent logs to stderr (after a failure)."""
        for args in (("ps",), ("logs", "--no-color", f"--tail={tail}")):
            result = self.compose(*args, check=False)
            print(result.stdout + result.stderr, file=sys.stderr, flush=True)

    def down(self) -> bool:
        return self.compose("down", "-v", check=False).returncode == 0


# ----------------------------------------------------------------- both hosts


@dataclass
class Deployment:
    """The public host and its private sites in one work folder, with the
    "transfer" folder (all that crosses between hosts) and the "internet"
    network (internal: no way out) they share."""

    settings: Settings
    work: Path
    public: Site
    privates: list[Site]
    compose_cmd: tuple[str, ...]
    version: str = field(default_factory=version)

    @classmethod
    def create(cls, settings: Settings, compose_cmd: tuple[str, ...]) -> Deployment:
        work = Path(tempfile.mkdtemp(prefix="edgerq-twosite."))
        p, carrier = settings.prefix, settings.carrier

        def site(name: str, role: Role, identity: str = "") -> Site:
            return Site(name, role, work / name, f"{p}-{name}", compose_cmd, carrier, identity)

        return cls(
            settings=settings,
            work=work,
            public=site("public", "public"),
            privates=[site(s.name, "private", s.identity) for s in PRIVATE_SITES],
            compose_cmd=compose_cmd,
        )

    @property
    def sites(self) -> list[Site]:
        return [self.public, *self.privates]

    @property
    def carrier(self) -> Carrier:
        return self.settings.carrier

    @property
    def internet(self) -> str:
        return f"{self.settings.prefix}-internet"

    @property
    def transfer(self) -> Path:
        return self.work / "transfer"

    @property
    def front_ca(self) -> Path:
        """The front's certificate: what clients trust (self-signed here)."""
        return self.transfer / "front-cert.pem"

    def to_private(self, site: Site) -> Path:
        """What the public host sends this private site (the SC's certificate, the token)."""
        return self.transfer / site.name / "to-private"

    def to_public(self, site: Site) -> Path:
        """What this private site sends the public host (its certificate, tcp)."""
        return self.transfer / site.name / "to-public"

    def site(self, name: str) -> Site:
        found = [s for s in self.sites if s.name == name]
        assert found, f"no site {name!r}"
        return found[0]

    # -------------------------------------------------- the steps of docs/production.md

    def remove_leftovers(self) -> None:
        """What an earlier run (TWOSITE_KEEP=1, or killed) left under these names."""
        for s in self.sites:
            label = f"label=com.docker.compose.project={s.project}"
            stale = docker("ps", "-aq", "--filter", label).split()
            if stale:
                say(f"removing {len(stale)} container(s) left by an earlier run of {s.project}")
                docker("rm", "-f", *stale, check=False)
            networks = docker("network", "ls", "-q", "--filter", label).split()
            if networks:
                docker("network", "rm", *networks, check=False)
        remove_labelled(self.settings.prefix)
        docker("network", "rm", self.internet, check=False)

    def build_images(self) -> None:
        """The same tags and Dockerfiles as the Compose suite: its layers are reused."""
        v = self.version
        say(f"build edgerq:{v}, edgerq-stunnel:{v}, edgerq-front:{v}")
        docker("build", "-q", "-t", f"edgerq:{v}", str(ROOT), timeout=BUILD_TIMEOUT)
        docker(
            "build", "-q", "-t", f"edgerq-stunnel:{v}", "-f", str(ROOT / "stunnel" / "Dockerfile"),
            str(ROOT), timeout=BUILD_TIMEOUT,
        )  # fmt: skip
        front = ROOT / "deploy" / "public" / "front"
        docker("build", "-q", "-t", f"edgerq-front:{v}", str(front), timeout=BUILD_TIMEOUT)

    def make_hosts(self) -> None:
        """Each host gets its own copy of the repository; the "internet" network."""
        for s in self.sites:
            s.clone()
        for s in self.privates:
            self.to_private(s).mkdir(parents=True)
            self.to_public(s).mkdir(parents=True)
        docker("network", "create", "--internal", self.internet)

    def set_up_public(self) -> None:
        """docs/production.md steps 1-2: .env, consumer.xml, keys and token."""
        pub, udp = self.public, self.carrier == "udp"
        say(f"carrier {self.carrier}; public host: .env, consumer.xml, keys and token (steps 1-2)")
        shutil.copyfile(pub.deploy / ".env.example", pub.deploy / ".env")
        pub.setenv("COMPOSE_PROJECT_NAME", pub.project)
        files = ["docker-compose.yml", "../../tests/twosite/public.override.yml"]
        if udp:
            files[1:1] = ["docker-compose.udp.yml"]
            files.append("../../tests/twosite/public.udp.override.yml")
        pub.setenv("COMPOSE_FILE", ":".join(files))
        example = "consumer.udp.example.xml" if udp else "consumer.example.xml"
        shutil.copyfile(pub.deploy / example, pub.deploy / "consumer.xml")
        pub.setenv("EDGERQ_VERSION", self.version)
        pub.setenv("EDGERQ_PUBLIC_NAME", PUBLIC_NAME)
        pub.setenv("EDGERQ_PUBLISH_ADDRESS", "127.0.0.1")
        pub.setenv("EDGERQ_PIPE_PORT", "")  # any free port of 127.0.0.1 (the test uses "internet")
        pub.setenv("EDGERQ_FRONT_PORT", "")
        pub.setenv("TWOSITE_INTERNET", self.internet)
        pub.make_secrets()
        pub.pki("token", "pipe-token")
        pub.pki("key", "www.example.test", "--out", "front", "--prefix", "front")
        keys = "quic" if udp else "stunnel"
        pub.pki("key", PUBLIC_NAME, "--out", keys, "--prefix", "sc")
        pub.pki("export", "to-private", f"{keys}/sc-cert.pem", "pipe-token")
        for s in self.privates:
            for exported in (pub.secrets / "to-private").iterdir():
                shutil.copyfile(exported, self.to_private(s) / exported.name)
        shutil.copyfile(pub.secrets / "front" / "front-cert.pem", self.front_ca)

    def set_up_private(self, site: Site) -> None:
        """docs/production.md step 3: .env, provider.xml, key."""
        say(f"private site {site.name}: .env, provider.xml, key (step 3)")
        shutil.copyfile(site.deploy / ".env.example", site.deploy / ".env")
        site.setenv("COMPOSE_PROJECT_NAME", site.project)
        site.setenv("EDGERQ_VERSION", self.version)
        site.setenv("EDGERQ_PUBLIC_NAME", PUBLIC_NAME)
        site.setenv("TWOSITE_INTERNET", self.internet)
        shutil.copyfile(site.repo / "tests" / "twosite" / "web.conf", site.deploy / "web.conf")
        site.make_secrets()
        web = ("<hostname>192.168.1.20</hostname>", "<hostname>web</hostname>")
        if self.carrier == "tcp":
            site.setenv(
                "COMPOSE_FILE", "docker-compose.yml:../../tests/twosite/private.override.yml"
            )
            site.setenv("EDGERQ_PIPE_PORT", "3443")  # the pipe port as seen on "internet"
            site.edit("provider.example.xml", "provider.xml", [web])
            site.pki("key", site.identity, "--out", "stunnel", "--prefix", "sp")
            site.pki("export", "to-public", "stunnel/sp-cert.pem")
            for exported in (site.secrets / "to-public").iterdir():
                shutil.copyfile(exported, self.to_public(site) / exported.name)
        else:
            site.setenv(
                "COMPOSE_FILE",
                "docker-compose.yml:docker-compose.udp.yml:../../tests/twosite/private.override.yml",
            )
            pipe = [
                ("<hostname>edge.example.com</hostname>", f"<hostname>{PUBLIC_NAME}</hostname>"),
                ("<port>8443</port>", "<port>4433</port>"),
            ]
            site.edit("provider.udp.example.xml", "provider.xml", [web, *pipe])

    def transferred(self) -> list[str]:
        """The files in the transfer folder, relative to it, sorted."""
        return sorted(
            str(p.relative_to(self.transfer)) for p in self.transfer.rglob("*") if p.is_file()
        )

    def exchange(self, site: Site) -> None:
        """docs/production.md step 4: each side installs what the other sent."""
        pub = self.public
        say(f"exchange with {site.name}: only {' '.join(self.transferred())}")
        sent = self.to_private(site)
        site.install(sent / "pipe-token", site.secrets / "pipe-token", 0o600)
        if self.carrier == "tcp":
            site.install_dir(site.secrets / "stunnel" / "peers")
            pub.install_dir(pub.secrets / "stunnel" / "peers")
            peers = site.secrets / "stunnel" / "peers"
            site.install(sent / "sc-cert.pem", peers / "sc-cert.pem", 0o644)
            # stunnel-sc's CAfile: the certificate of every private site exchanged so far
            sp_certs = pub.secrets / "stunnel" / "peers" / "sp-cert.pem"
            sent_back = [self.to_public(s) / "sp-cert.pem" for s in self.privates]
            pem = b"".join(f.read_bytes() for f in sent_back if f.exists())
            pub.install_bytes(pem, sp_certs, 0o644)
        else:  # the SP pins the SC's QUIC certificate (<ca_file>); nothing goes back
            site.install_dir(site.secrets / "quic")
            site.install(sent / "sc-cert.pem", site.secrets / "quic" / "sc-cert.pem", 0o644)

    def up(self, site: Site) -> None:
        say(f"{site.name}: up -d")
        site.compose("up", "-d")
        site.wait_healthy()

    # -------------------------------------------------- containers on "internet"

    def run_python(
        self,
        code: str,
        *args: str,
        network: str | None = None,
        mounts: Sequence[tuple[Path, str]] = (),
        options: Sequence[str] = (),
        timeout: float = CLIENT_TIMEOUT,
    ) -> str:
        """Python CODE in a fresh container (on "internet" unless NETWORK); its stdout.
        OPTIONS: more of ``docker run``'s."""
        volumes = [arg for src, dst in mounts for arg in ("-v", f"{src}:{dst}:ro")]
        return docker(
            "run", "--rm", "--label", f"{LABEL}={self.settings.prefix}",
            "--network", network or self.internet, *volumes, *options,
            BASE_IMAGE, "python3", "-c", code, *args, timeout=timeout,
        )  # fmt: skip

    def client(self, code: str) -> str:
        """CODE in a client on "internet" that trusts the front's certificate (/ca.pem)."""
        return self.run_python(code, mounts=[(self.front_ca, "/ca.pem")])

    def address_on_internet(self, container: str) -> str:
        network = f'index .NetworkSettings.Networks "{self.internet}"'
        fmt = "{{with " + network + "}}{{.IPAddress}}{{end}}"
        return docker("inspect", "-f", fmt, container, timeout=30)

    # -------------------------------------------------- the end

    def tear_down(self, failed: bool) -> None:
        """Logs after a failure; then, unless TWOSITE_KEEP=1, remove both projects,
        the network and the work folder."""
        remove_labelled(self.settings.prefix)
        if failed:
            say("failed: state and logs follow")
            for s in self.sites:
                s.report()
        if self.settings.keep:
            say(f"TWOSITE_KEEP=1: leaving both projects running ({self.work})")
            return
        with ThreadPoolExecutor(len(self.sites)) as pool:
            for s, ok in zip(self.sites, pool.map(Site.down, self.sites), strict=True):
                if not ok:
                    say(f"warning: {s.name} down failed")
        docker("network", "rm", self.internet, check=False)
        shutil.rmtree(self.work, ignore_errors=True)


def remove_labelled(prefix: str) -> None:
    """The suite's own containers (client, probe, load), whatever state they are in."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}={prefix}", check=False).split()
    if ids:
        docker("rm", "-f", *ids, check=False)


# ----------------------------------------------------------------- the load client


@dataclass(frozen=True)
class LoadResult:
    """What tests/twosite/load.py printed when it stopped."""

    line: str
    requests: int
    failed: int
    failure_window_s: float
    errors: list[str]
    stopped: str


class Load:
    """tests/twosite/load.py in a container on "internet": HTTPS GETs through
    the front from TWOSITE_LOAD_WORKERS threads until stopped (SIGTERM)."""

    LIMIT_S = 300
    """The load stops by itself after this long, should nobody stop it."""

    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.name = f"{deployment.settings.prefix}-load"

    def start(self) -> None:
        d = self.deployment
        self.remove()
        docker(
            "run", "-d", "--name", self.name, "--label", f"{LABEL}={d.settings.prefix}",
            "--network", d.internet,
            "-v", f"{d.front_ca}:/ca.pem:ro", "-v", f"{HERE / 'load.py'}:/load.py:ro",
            BASE_IMAGE, "python3", "/load.py", f"{FRONT_URL}/load", "/ca.pem",
            str(d.settings.workers), str(self.LIMIT_S),
        )  # fmt: skip
        time.sleep(3)

    def stop(self) -> LoadResult:
        """SIGTERM, then its result line (the last line of its output)."""
        docker("stop", "-t", "30", self.name, timeout=90)
        out = run(["docker", "logs", self.name], timeout=60)
        lines = (out.stdout + out.stderr).strip().splitlines()
        self.remove()
        last = lines[-1] if lines else ""
        try:
            record = json.loads(last)
        except json.JSONDecodeError:
            raise AssertionError(f"the load printed no result: {lines[-10:]}") from None
        return LoadResult(
            line=last,
            requests=int(record["requests"]),
            failed=int(record["failed"]),
            failure_window_s=float(record["failure_window_s"]),
            errors=[str(e) for e in record["errors"]],
            stopped=str(record.get("stopped", "")),
        )

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)
