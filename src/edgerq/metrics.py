"""Prometheus metrics of one daemon, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

OPEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """Everything an operator graphs or alerts on, labelled by what it concerns."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.pipes = Gauge(
            "edgerq_pipes_connected", "Authenticated pipes now up", ["carrier", "sp"], registry=r
        )
        self.registrations = Counter(
            "edgerq_registrations", "Service registrations by result", ["result"], registry=r
        )
        self.streams_open = Gauge(
            "edgerq_streams_open", "Tunneled connections now open", ["service"], registry=r
        )
        self.streams = Counter(
            "edgerq_streams", "Tunneled connections by outcome", ["service", "outcome"], registry=r
        )
        self.bytes = Counter(
            "edgerq_stream_bytes",
            "Bytes relayed (up: client to service, down: service to client)",
            ["service", "direction"],
            registry=r,
        )
        self.open_seconds = Histogram(
            "edgerq_stream_open_seconds",
            "Time from accepting a client to the service being connected",
            ["service"],
            buckets=OPEN_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "edgerq_stream_retries",
            "Connections opened again on another pipe before the service answered, by cause",
            ["service", "cause"],
            registry=r,
        )
        self.auth_failures = Counter(
            "edgerq_auth_failures", "Pipes refused for a wrong or missing token proof", registry=r
        )
        self.rejected = Counter(
            "edgerq_pipes_rejected",
            "Pipes closed for a protocol error, by reason",
            ["reason"],
            registry=r,
        )
        self.auth_blocks = Counter(
            "edgerq_auth_blocks",
            "Source addresses blocked for too many failed authentications",
            registry=r,
        )
        self.auth_blocked_sources = Gauge(
            "edgerq_auth_blocked_sources", "Source addresses now blocked", registry=r
        )
        self.limit_hits = Counter(
            "edgerq_limit_hits",
            "Pipes, streams or frames refused by a limit against abuse, by limit",
            ["limit"],
            registry=r,
        )


def outcome_label(outcome: str) -> str:
    """A small, fixed set of label values from a free-text outcome."""
    if outcome == "ok":
        return "ok"
    for code in ("502", "503", "504"):
        if outcome.startswith(code):
            return code
    if outcome.startswith("idle timeout"):
        return "idle_timeout"
    if "pipe closed" in outcome:
        return "pipe_closed"
    if "reset" in outcome:
        return "reset"
    return "closed_early" if "closed" in outcome else "error"
