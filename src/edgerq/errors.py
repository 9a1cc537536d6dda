"""The exceptions edgerq raises.

    EdgerqError
    ├── ConfigError            a config file is missing, not XML or not valid
    └── ProtocolError          a pipe cannot go on
        ├── LocalProtocolError     we misused the protocol API (a bug here)
        └── RemoteProtocolError    the peer sent something we must refuse
            ├── FrameError             malformed, truncated or oversized frame
            ├── VersionError           no protocol version in common
            ├── AuthError              wrong or missing token proof
            └── LimitExceeded          the peer went past a limit against abuse

Lower layers' exceptions (OSError, lxml's errors) are converted at the
boundary into these, so callers catch one tree.
"""

from __future__ import annotations

from edgerq.labels import Limit


class EdgerqError(Exception):
    """Base of every error edgerq raises on purpose."""


class ConfigError(EdgerqError):
    """A configuration file cannot be used; the message names file and line."""


class ProtocolError(EdgerqError):
    """The pipe cannot continue."""


class LocalProtocolError(ProtocolError):
    """We tried something the protocol does not allow in this state."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; the pipe moves to an error state."""


class FrameError(RemoteProtocolError):
    """A frame is malformed, truncated or beyond the size limit."""


class VersionError(RemoteProtocolError):
    """The two ends share no protocol version."""


class AuthError(RemoteProtocolError):
    """The token proof is wrong or missing."""


class LimitExceeded(RemoteProtocolError):
    """The peer went past a limit that bounds what it can make us hold (see limits.py)."""

    def __init__(self, message: str, limit: Limit) -> None:
        super().__init__(message)
        self.limit = limit
        """Which limit (its value is the metrics label)."""
