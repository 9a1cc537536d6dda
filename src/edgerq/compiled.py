"""Which modules the optional mypyc build compiles, and which of them this process loaded.

``EDGERQ_MYPYC=1 pip install --no-build-isolation .`` (``make build-fast``) compiles
``MYPYC_MODULES`` to C extensions; without the variable, or where no compiler
exists, the same package installs as pure Python. ``setup.py`` reads the list
from this file without importing edgerq, so it stays free of edgerq imports.

Left out, and why (a module must type-check *and* compile unchanged):

- ``protocol/messages.py``: mypyc reads the handshake messages' ``_FIXED``
  struct layouts as instance attributes (they need a ``ClassVar``).
- ``carriers/tcp.py``: ``dial`` is an async generator (``asynccontextmanager``),
  which mypyc does not implement.
- ``carriers/adapter.py``: its ``CarrierPipe`` is subclassed by modules that stay
  interpreted (tcp, quic, memory carriers); a compiled class refuses those.

Not tried: ``sc/daemon.py``, ``sp/daemon.py`` (start-up and reload, not per request) and the
quic carrier.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util

MYPYC_MODULES: tuple[str, ...] = (
    # every request's bytes: frames, the pipe core, flow control, the local sockets
    "edgerq.protocol.frames",
    "edgerq.pipe.events",
    "edgerq.pipe.bounds",
    "edgerq.pipe.streams",
    "edgerq.pipe.outbox",
    "edgerq.pipe.budget",
    "edgerq.pipe.stream",
    "edgerq.pipe.connection",
    "edgerq.runtime.relay",
    # compiled with relay: a compiled class accepts only compiled subclasses
    "edgerq.sc.client_connection",
    # every new connection: the SC's opener and slots, the SP's pipe and its opens
    "edgerq.sc.opener",
    "edgerq.sc.open_attempt",
    "edgerq.sc.slots",
    "edgerq.sc.slow_clients",
    "edgerq.sc.fairness",
    "edgerq.sc.registry",
    "edgerq.sc.gate",
    "edgerq.sc.http_errors",
    "edgerq.pipe.interface",
    "edgerq.pipe.roles",
    "edgerq.sc.acceptance",
    "edgerq.sp.addresses",
    "edgerq.sp.dialer",
    "edgerq.sp.connector",
    "edgerq.protocol.handshake",
    "edgerq.protocol.proxy_header",
)
"""Hot, fully typed modules (docs/scaling.md has what each group saves). A compiled
class cannot be subclassed by interpreted code, so a subclass's module must be on
this list with its base's. If a module stops compiling, mypyc names it: take it
off this list (it then runs interpreted)."""


def is_compiled(module: str) -> bool:
    """Whether ``module`` would load (or was loaded) from a C extension."""
    spec = importlib.util.find_spec(module)
    origin = "" if spec is None or spec.origin is None else spec.origin
    return origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """The modules of ``MYPYC_MODULES`` that are C extensions in this installation."""
    return [name for name in MYPYC_MODULES if is_compiled(name)]


def describe() -> str:
    """For ``--version`` and the start line: ``pure Python`` or ``mypyc: N of M modules``."""
    done = compiled_modules()
    if not done:
        return "pure Python"
    return f"mypyc: {len(done)} of {len(MYPYC_MODULES)} modules compiled"
