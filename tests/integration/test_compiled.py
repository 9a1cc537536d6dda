"""The optional mypyc build (``make build-fast``, ``make test-fast``): the compiled
modules are the ones a daemon runs, and bytes still cross the tunnel intact.

In the pure-Python venv the compiled-only tests skip; ``make test-fast`` sets
``EDGERQ_EXPECT_COMPILED=1`` so that a build which silently fell back to pure
Python fails instead of skipping.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgerq import compiled
from tests.integration.backends import payload, sha256
from tests.integration.clients import download, upload
from tests.integration.conftest import Tunnel

SRC = Path(__file__).resolve().parents[2] / "src"
EXPECT_COMPILED = os.environ.get("EDGERQ_EXPECT_COMPILED") == "1"
LOADED = compiled.compiled_modules()

needs_compiled = pytest.mark.skipif(
    not LOADED and not EXPECT_COMPILED,
    reason="pure-Python install (make build-fast && make test-fast runs these)",
)


def test_every_listed_module_is_an_edgerq_source_file() -> None:
    for name in compiled.MYPYC_MODULES:
        assert (SRC / Path(*name.split("."))).with_suffix(".py").is_file(), name


def test_version_says_how_the_package_was_built() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "edgerq", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = "pure Python" if not LOADED else f"mypyc: {len(LOADED)} of"
    assert expected in done.stdout


@needs_compiled
def test_every_listed_module_is_loaded_compiled() -> None:
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in compiled.MYPYC_MODULES:
        module = importlib.import_module(name)
        assert str(module.__file__).endswith(suffixes), f"{name} from {module.__file__}"


@needs_compiled
def test_a_compiled_tunnel_carries_bytes_intact_both_ways(tunnel: Tunnel) -> None:
    n = len(compiled.MYPYC_MODULES)
    for daemon in (tunnel.sc, tunnel.sp):
        daemon.wait_log(f"mypyc: {n} of {n} modules compiled")
    data = payload(3 * 1024 * 1024 + 17, seed=14)
    assert upload(tunnel.service_port, data) == sha256(data)
    assert download(tunnel.service_port, len(data), seed=15) == sha256(payload(len(data), 15))
