"""The one place edgerq patches qh3: its fixed limit of 100 concurrent streams.

Called once, as the ``udp`` carrier is imported.
"""

from __future__ import annotations

from typing import Any

from edgerq import defaults

MAX_STREAMS = defaults.STREAMS_PER_PIPE
"""Concurrent streams a pipe's peer may open (qh3 fixes 100 in its Rust core)."""


def raise_stream_limit() -> None:
    """Let a pipe carry more than qh3's 100 concurrent streams.

    qh3 hard-codes 100 concurrent bidirectional streams twice: as the limit its
    Rust core enforces and as the transport parameter it announces, with no
    setting for either. With a tunnel's long-lived connections the 101st stream
    would wait for a free slot. Both values are replaced here, and only when
    they have exactly the value and place this qh3 version gives them, so
    another qh3 release is left untouched (and the limit is then 100 again).
    """
    import qh3.quic.connection as qh3_connection
    import qh3.quic.tls_bridge as qh3_tls_bridge

    core_class: Any = getattr(qh3_connection, "QuicConnectionCore", None)
    parameters_class: Any = getattr(qh3_tls_bridge, "QuicTransportParameters", None)
    if core_class is None or parameters_class is None or getattr(core_class, "_edgerq", False):
        return

    def core_with_more_streams(*args: Any) -> Any:
        if len(args) > 22 and args[21] == 100 and args[22] == 103:
            args = (*args[:21], MAX_STREAMS, *args[22:])
        return core_class(*args)

    def parameters_with_more_streams(**kwargs: Any) -> Any:
        if kwargs.get("initial_max_streams_bidi") == 100:
            kwargs["initial_max_streams_bidi"] = MAX_STREAMS
        return parameters_class(**kwargs)

    core_with_more_streams._edgerq = True  # type: ignore[attr-defined]
    setattr(qh3_connection, "QuicConnectionCore", core_with_more_streams)  # noqa: B010
    setattr(qh3_tls_bridge, "QuicTransportParameters", parameters_with_more_streams)  # noqa: B010
