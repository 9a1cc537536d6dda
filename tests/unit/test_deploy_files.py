"""The production deployment's files (deploy/): samples load, images carry the version."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgerq import __version__
from edgerq.config import ConsumerConfig, ProviderConfig, load_any

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = sorted(ROOT.glob("deploy/*/*.example.xml"))
COMPOSE_FILES = sorted(
    [*ROOT.glob("docker-compose*.yml"), *ROOT.glob("deploy/*/docker-compose*.yml")]
)


def test_there_are_deploy_samples() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SAMPLES}
    assert {"deploy/public/consumer.example.xml", "deploy/private/provider.example.xml"} <= names


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_deploy_sample_loads(path: Path) -> None:
    config = load_any(path, env={})
    if path.parent.name == "public":
        assert isinstance(config, ConsumerConfig)
        # nothing on all addresses by accident: services and admin on the edge address
        assert all(s.host == "10.230.80.10" for s in config.services)
        assert config.admin is not None and config.admin.host == "10.230.80.10"
    else:
        assert isinstance(config, ProviderConfig)
        assert all(s.proxy_protocol is None for p in config.pipes for s in p.services)


def test_both_sides_agree_on_the_uuids() -> None:
    sc = load_any(ROOT / "deploy/public/consumer.example.xml", env={})
    sp = load_any(ROOT / "deploy/private/provider.example.xml", env={})
    assert isinstance(sc, ConsumerConfig) and isinstance(sp, ProviderConfig)
    assert {s.uuid for s in sc.services} == {s.uuid for p in sp.pipes for s in p.services}


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_edgerq_images_are_tagged_with_the_package_version(path: Path) -> None:
    tags = re.findall(r"image: (edgerq[\w-]*):(?:\$\{EDGERQ_VERSION:-)?([\w.]+)", path.read_text())
    for _, tag in tags:
        assert tag == __version__, f"{path.name}: edgerq image tag {tag}, package {__version__}"


def test_env_examples_name_the_package_version() -> None:
    for env in ROOT.glob("deploy/*/.env.example"):
        assert f"EDGERQ_VERSION={__version__}\n" in env.read_text(), env
