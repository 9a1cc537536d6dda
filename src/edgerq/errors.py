"""The exceptions edgerq raises.

    EdgerqError
    ├── ConfigError            a config file is missing, not XML or not valid
    │   └── UnsupportedQh3         qh3 is a release the udp carrier does not know
    ├── PkiError               a key, certificate or token file cannot be made or read
    ├── OpenRefused            a stream did not reach its service (pipe.stream)
    │   └── PipeLost               its pipe died first: another pipe may serve it
    └── ProtocolError          a pipe cannot go on
        ├── LocalProtocolError     we misused the protocol API (a bug here)
        └── RemoteProtocolError    the peer sent something we must refuse
            ├── FrameError             malformed, truncated or oversized frame
            ├── VersionError           no protocol version in common
            ├── AuthError              wrong or missing token proof
            └── LimitExceeded          the peer went past a limit against abuse

Lower layers' exceptions (OSError, lxml's errors) are converted at the
boundary into these, so callers catch one tree. ``OpenRefused`` and
``PipeLost`` live beside the stream that raises them, ``PkiError`` in
``config.pki``, ``UnsupportedQh3`` in ``carriers.quic.qh3_compat``. A
constructor given impossible arguments (a budget of 0 bytes, a backoff that
shrinks) raises ``ValueError``, as Python's own do.
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
    """The peer went past a limit that bounds what it can make us hold (``pipe.bounds``,
    ``pipe.budget``, ``sc.gate``)."""

    def __init__(self, message: str, limit: Limit) -> None:
        super().__init__(message)
        self.limit = limit
        """Which limit (its value is the metrics label)."""
