"""Every default value in one place: the config model and the pipe code both read these.

Values a config file can override are filled into ``config.model`` from here;
the pipe takes its timings and bounds as plain arguments whose defaults come
from here too, so the two can never disagree.
"""

from __future__ import annotations

# --- per service (consumer.xml) ------------------------------------------------------

MAX_CONNECTIONS = 50
"""Most concurrent tunneled connections for a service at the SC."""
REQUEST_BUFFER = 4096
"""The original's read size; now the smallest DATA frame limit a stream sends with (see
``DATA_FRAME``): a larger ``request_buffer`` still makes larger frames."""
DATA_FRAME = 64 * 1024
"""Largest DATA frame a stream sends when ``request_buffer`` (the OPEN's ``max_frame``)
is smaller: bulk transfers are framed in few large frames, whatever the config's
historical 4 KiB. Every edgerq peer accepts payloads up to ``frames.MAX_PAYLOAD``."""
REQUEST_TTL = 3.0
"""Seconds a new connection may take to reach the service end to end."""
STREAM_WINDOW = 1024 * 1024
"""A stream's flow-control window, in bytes (each end grants the smaller of its own and
the peer's: consumer.xml per service, provider.xml per SP)."""
MIN_STREAM_WINDOW = 16 * 1024
"""The smallest ``stream_window`` a config may set (the XSDs say so too): what the SC may
send on a new stream before the SP's OPEN_OK tells it the window the SP granted."""
WAITING_PER_SOURCE = 1000
"""Most connections of one source address waiting for a slot of one service."""
HEADER_TIMEOUT = 10.0
"""``http`` services: seconds a client has to send the head of its first request."""
MIN_RATE_HTTP = 2.0
"""``http`` services: bytes per second below which a window with traffic is too slow."""
MIN_RATE_TCP = 0.0
"""``tcp`` services: no minimum rate (a tcp protocol may trickle legitimately)."""
RATE_WINDOW = 30.0
"""Seconds over which a connection's transfer rate is judged."""
LISTEN_BACKLOG = 4096
"""Connections the kernel queues on a service port before the SC accepts them (a
burst of clients must not be dropped there); net.core.somaxconn caps it."""
SHUTDOWN_GRACE = 5.0
"""Seconds open streams may take to finish on SIGTERM or when a reload removes them."""

# --- per pipe (provider.xml) ----------------------------------------------------------

RESOLVE_INTERVAL = 5.0
"""With <all_addresses>: seconds between two lookups of the pipe's hostname."""
DIAL_TIMEOUT = 10.0
"""Seconds the SP gives one dial of its pipe (connect and carrier handshake)."""
REDIAL_STEADY = 6
"""Redials 0.25-0.5 s apart (about 2 s in all) before the delay grows: an SC
restarted in place is found within half a second of its return."""
CONNECT_TIMEOUT = 10.0
"""Seconds the SP gives a connect to a service before it answers the OPEN with a timeout."""

# --- limits against abuse (<limits>) ------------------------------------------------

AUTH_FAILURES = 5
AUTH_WINDOW = 60.0
AUTH_BLOCK = 300.0
TRACKED_SOURCES = 10000
UNAUTHENTICATED_PIPES = 64
HANDSHAKE_TIMEOUT = 10.0
"""Seconds a pipe may take to authenticate."""
CONTROL_BACKLOG = 4 * 1024 * 1024
"""Most bytes of control frames queued towards a peer that does not read."""
STREAMS_PER_PIPE = 16384
"""Most concurrent streams the peer may open on one pipe (also QUIC's stream limit)."""
PIPE_BUFFER = 64 * 1024 * 1024
"""Most bytes one pipe may hold across all its streams: received from the peer and not
yet taken by the local sockets. Past it the stream that brought the excess is reset."""
LIMIT_VIOLATIONS = 16
"""Stream resets for overrunning a window or the pipe buffer after which the peer's pipe
is ended with GOAWAY (a peer that honours the windows never overruns one)."""

# --- pipe timings (not configurable) --------------------------------------------------

HEARTBEAT_INTERVAL = 1.0
HEARTBEAT_TIMEOUT = 8.0
CLOSE_TIMEOUT = 2.0
"""Seconds a pipe closed with GOAWAY may take to flush before it is aborted (both carriers)."""
