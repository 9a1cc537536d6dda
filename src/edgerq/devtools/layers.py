"""The package's layering, checked: ``python -m edgerq.devtools.layers``.

Inside ``edgerq`` a module may import only from its own layer or the layers
below it. From the bottom up:

    base       errors, the label enums, defaults: no edgerq imports of note
    protocol   frames, messages, handshake: bytes in, bytes and events out
    pipe       the pipe core: multiplexing, flow control, heartbeats, limits
    config     the config model and its loader (the pipe takes plain values)
    carriers   tcp and quic: how a pipe travels (qh3_compat: all of qh3 that is not public)
    daemons    SC and SP orchestration and what they use (relay, registry, ...)
    cli        argument parsing, logging set-up, developer tools

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
    (
        "pipe",
        (
            "edgerq.pipe",
            "edgerq.pipe_adapter",
            "edgerq.pipe_bounds",
            "edgerq.pipe_core",
            "edgerq.pipe_events",
            "edgerq.pipe_outbox",
            "edgerq.pipe_roles",
            "edgerq.pipe_streams",
            "edgerq.stream",
            "edgerq.budget",
        ),
    ),
    ("config", ("edgerq.config", "edgerq.tls", "edgerq.pki")),
    ("carriers", ("edgerq.carriers",)),
    (
        "daemons",
        (
            "edgerq.sc",
            "edgerq.opening",
            "edgerq.client_connection",
            "edgerq.connection_slots",
            "edgerq.slow_clients",
            "edgerq.open_attempt",
            "edgerq.fairness",
            "edgerq.pipe_acceptance",
            "edgerq.sp",
            "edgerq.provider_pipe",
            "edgerq.service_connector",
            "edgerq.pipe_addresses",
            "edgerq.relay",
            "edgerq.registry",
            "edgerq.limits",
            "edgerq.admin",
            "edgerq.metrics",
            "edgerq.httperrors",
            "edgerq.backoff",
            "edgerq.waiting",
            "edgerq.logs",
            "edgerq.oslimits",
        ),
    ),
    ("cli", ("edgerq.cli", "edgerq.status_report", "edgerq.__main__", "edgerq.devtools")),
)

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
