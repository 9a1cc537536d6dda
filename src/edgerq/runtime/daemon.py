"""What the command line runs: the interface the SC and the SP both offer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class DaemonConfig(Protocol):
    """What the runner reads of either daemon's configuration."""

    @property
    def path(self) -> Path: ...
    @property
    def shutdown_grace(self) -> float: ...


class Daemon(Protocol):
    """An SC or an SP, as its runner drives it: start, reload on SIGHUP, drain, stop."""

    @property
    def config(self) -> DaemonConfig: ...

    async def start(self) -> None:
        """Bind every port and begin; raises ``OSError`` or ``ConfigError`` if it cannot."""

    async def reload_file(self) -> None:
        """Read ``config.path`` again and apply it; raises ``ConfigError`` (and the
        running configuration stays) if the file is invalid or cannot be applied."""

    async def drain(self, grace: float) -> None:
        """Take no new work; let what is open finish within ``grace`` seconds."""

    async def stop(self) -> None:
        """Close listeners, pipes and open streams."""

    def bound(self) -> dict[str, Any]:
        """The ports bound, for the ready line (a configured port 0 is any free one)."""
