"""The package's layering, checked: ``python -m edgerq.devtools.layers``.

Inside ``edgerq`` a module may import only from its own layer or the layers
below it. Each layer is a package; from the bottom up:

    base       errors, the label enums, defaults (the modules at the top of the tree)
    protocol   frames, messages, handshake: bytes in, bytes and events out
    pipe       the connection without I/O: multiplexing, flow control, heartbeats, bounds
    config     the config model, its loader, certificates and keys
    carriers   the adapter base, tcp, memory and quic: how a pipe travels
    runtime    what both daemons run on: relay, metrics, admin, backoff, logs
    daemons    sc/ and sp/, side by side: neither imports the other
    cli        argument parsing, the daemon runner, status, developer tools

Every module must be placed in a layer, so a new one is a conscious choice.
Exits 1 and names each upward import (file, line, what it imports) if any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("edgerq", "edgerq.compiled", "edgerq.defaults", "edgerq.errors", "edgerq.labels")),
    ("protocol", ("edgerq.protocol",)),
    ("pipe", ("edgerq.pipe",)),
    ("config", ("edgerq.config",)),
    ("carriers", ("edgerq.carriers",)),
    ("runtime", ("edgerq.runtime",)),
    ("daemons", ("edgerq.sc", "edgerq.sp")),
    ("cli", ("edgerq.cli", "edgerq.__main__", "edgerq.devtools")),
)

SIBLINGS: tuple[frozenset[str], ...] = (frozenset({"edgerq.sc", "edgerq.sp"}),)
"""Packages that share a layer but must not import each other."""

SANS_IO: tuple[str, ...] = ("edgerq.protocol", "edgerq.pipe")
"""Packages that do no I/O: they may not import these modules, even for typing."""
IO_MODULES: tuple[str, ...] = ("asyncio", "socket", "selectors", "uvloop")

PACKAGE = Path(__file__).resolve().parents[1]


def layer_of(module: str) -> int | None:
    """The index in ``LAYERS`` of ``module`` (the longest matching prefix wins)."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            inside = prefix != "edgerq" and module.startswith(prefix + ".")
            longer = best is None or len(prefix) > best[1]
            if (module == prefix or inside) and longer:
                best = (index, len(prefix))
    return best[0] if best is not None else None


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sibling_of(a: str, b: str) -> bool:
    """Whether modules ``a`` and ``b`` sit in two different packages of one ``SIBLINGS`` set."""
    for group in SIBLINGS:
        top_a = next((p for p in group if a == p or a.startswith(p + ".")), None)
        top_b = next((p for p in group if b == p or b.startswith(p + ".")), None)
        if top_a is not None and top_b is not None and top_a != top_b:
            return True
    return False


def io_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` for every import of an ``IO_MODULES`` module in ``path``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        found += [(node.lineno, n) for n in names if n.split(".")[0] in IO_MODULES]
    return found


def imports(path: Path, known: set[str]) -> list[tuple[int, str]]:
    """``(line, module)`` for every edgerq import in ``path`` (TYPE_CHECKING ones too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("edgerq")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if not node.module.startswith("edgerq"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"  # ``from edgerq import defaults``
                found.append((node.lineno, sub if sub in known else node.module))
    return found


def check(root: Path = PACKAGE) -> list[str]:
    """Every violation of the layering under ``root``, as readable lines."""
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    problems: list[str] = []
    for path in files:
        name = module_name(path, root)
        own = layer_of(name)
        if own is None:
            problems.append(f"{path}: module {name} is in no layer (add it to LAYERS)")
            continue
        for line, target in imports(path, known):
            theirs = layer_of(target)
            if theirs is None:
                problems.append(f"{path}:{line}: {target} is in no layer (add it to LAYERS)")
            elif theirs > own:
                problems.append(
                    f"{path}:{line}: {name} ({LAYERS[own][0]}) imports {target} "
                    f"({LAYERS[theirs][0]}), a higher layer"
                )
            elif sibling_of(name, target):
                problems.append(f"{path}:{line}: {name} imports {target}, a sibling package")
        if any(name == p or name.startswith(p + ".") for p in SANS_IO):
            for line, target in io_imports(path):
                problems.append(f"{path}:{line}: {name} does no I/O but imports {target}")
    return problems


def main() -> int:
    problems = check()
    for problem in problems:
        print(problem)
    if not problems:
        print("layering ok: " + " -> ".join(name for name, _ in LAYERS))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
