"""The package's layering holds, and the check would notice if it did not."""

from __future__ import annotations

from pathlib import Path

from edgerq.devtools import layers


def test_no_module_imports_from_a_higher_layer() -> None:
    assert layers.check() == []


def test_every_layer_is_in_the_documented_order() -> None:
    assert [name for name, _ in layers.LAYERS] == [
        "base",
        "protocol",
        "pipe",
        "config",
        "carriers",
        "runtime",
        "daemons",
        "cli",
    ]


def fake_package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "edgerq"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_an_upward_import_is_named_with_its_file_and_line(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "config/__init__.py": "",
            "config/model.py": "",
            "pipe/__init__.py": "",
            "pipe/stream.py": "import uuid\nfrom edgerq.config.model import PipeLimits\n",
        },
    )
    (problem,) = layers.check(root)
    assert "stream.py:2:" in problem
    assert "edgerq.pipe.stream (pipe) imports edgerq.config.model (config)" in problem


def test_imports_under_type_checking_count_too(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "sc/__init__.py": "",
            "sc/daemon.py": "",
            "pipe/__init__.py": "",
            "pipe/stream.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from edgerq.sc.daemon import ServiceConsumer\n",
        },
    )
    (problem,) = layers.check(root)
    assert "stream.py:3:" in problem


def test_a_module_in_no_layer_is_reported(tmp_path: Path) -> None:
    root = fake_package(tmp_path, {"manager.py": ""})
    assert layers.check(root) == [
        f"{root / 'manager.py'}: module edgerq.manager is in no layer (add it to LAYERS)"
    ]


def test_from_package_import_module_resolves_to_the_module(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "defaults.py": "",
            "protocol/__init__.py": "",
            "protocol/frames.py": "from edgerq import defaults\nfrom edgerq import __version__\n",
        },
    )
    assert layers.check(root) == []


def test_the_sans_io_packages_import_no_asyncio_even_for_typing(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "pipe/__init__.py": "",
            "pipe/connection.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    import asyncio\n",
            "protocol/__init__.py": "",
            "protocol/frames.py": "from socket import socket\n",
            "runtime/__init__.py": "",
            "runtime/relay.py": "import asyncio\n",
        },
    )
    assert sorted(layers.check(root)) == [
        f"{root / 'pipe/connection.py'}:3: edgerq.pipe.connection does no I/O but imports asyncio",
        f"{root / 'protocol/frames.py'}:1: edgerq.protocol.frames does no I/O but imports socket",
    ]


def test_the_real_pipe_package_imports_no_asyncio() -> None:
    pipe = Path(layers.PACKAGE, "pipe")
    assert sorted(p.name for p in pipe.glob("*.py")), "the pipe package has modules"
    for path in pipe.glob("*.py"):
        assert layers.io_imports(path) == [], path


def test_the_two_daemons_do_not_import_each_other(tmp_path: Path) -> None:
    root = fake_package(
        tmp_path,
        {
            "sc/__init__.py": "",
            "sc/registry.py": "",
            "sp/__init__.py": "",
            "sp/dialer.py": "from edgerq.sc.registry import ServiceRegistry\n",
        },
    )
    assert layers.check(root) == [
        f"{root / 'sp/dialer.py'}:1: edgerq.sp.dialer imports edgerq.sc.registry, a sibling package"
    ]
