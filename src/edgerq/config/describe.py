"""What a config file will do, in words: ``edgerq check``'s report."""

from __future__ import annotations

from edgerq.config.model import ConsumerConfig, ConsumerService, ProviderConfig


def describe(config: ConsumerConfig | ProviderConfig) -> str:
    """Listeners, services, limits (SC) or pipes and services (SP), one per line."""
    if isinstance(config, ConsumerConfig):
        return "\n".join(_consumer(config))
    return "\n".join(_provider(config))


def _consumer(config: ConsumerConfig) -> list[str]:
    lines = [f"{config.path}: service consumer (SC)"]
    for listener in config.listeners:
        tls = f", certificate {listener.certificate}" if listener.protocol == "udp" else ""
        lines.append(
            f"  accepts pipes ({listener.protocol}) on {listener.host}:{listener.port}{tls}"
        )
    lines.append(
        "  SP authentication: "
        + (
            f"token from {config.token_source}"
            if config.auth_token is not None
            else "none (any SP that reaches the listener may register)"
        )
    )
    if not config.services:
        lines.append("  no services configured")
    for service in config.services:
        lines += _consumer_service(service)
    lim = config.limits
    lines.append(
        f"  limits: {lim.auth_failures} failed authentications in {lim.auth_window:g} s "
        f"block a source for {lim.auth_block:g} s; at most {lim.unauthenticated_pipes} "
        f"pipes authenticating, each for {lim.handshake_timeout:g} s; "
        f"pipe_buffer {lim.pipe_buffer}"
    )
    return lines


def _consumer_service(s: ConsumerService) -> list[str]:
    rate = s.effective_min_rate
    trusted = f" ({len(s.trusted_sources)} trusted network(s) exempt)" if s.trusted_sources else ""
    head = (
        f", request head within {s.header_timeout:g} s"
        if s.type == "http" and s.header_timeout
        else ""
    )
    return [
        f"  service '{s.name}' {s.uuid} ({s.type}) on {s.host}:{s.port}: "
        f"max_connections {s.max_connections}, request_buffer "
        f"{s.request_buffer}, request_ttl {s.request_ttl:g} s, "
        f"stream_window {s.stream_window}"
        + (f", idle_timeout {s.idle_timeout:g} s" if s.idle_timeout else ""),
        f"    fair: {s.per_source_cap} connection(s) and {s.waiting_per_source} "
        f"waiting per client address{trusted}{head}"
        + (f", min_rate {rate:g} B/s over {s.rate_window:g} s" if rate else ", no min_rate"),
    ]


def _provider(config: ProviderConfig) -> list[str]:
    lines = [f"{config.path}: service provider (SP)"]
    for p in config.pipes:
        token = f"token from {p.token_source}" if p.auth_token is not None else "no token"
        lines.append(
            f"  pipe '{p.name}' ({p.protocol}) to {p.hostname}:{p.port}, {token}, "
            f"stream_window {p.stream_window}, pipe_buffer {config.limits.pipe_buffer}"
        )
        if p.protocol == "udp":
            if p.server_fingerprint:
                lines.append(f"    SC certificate pinned to {p.server_fingerprint}")
            elif p.ca_file:
                lines.append(f"    SC certificate verified against {p.ca_file}")
            else:
                lines.append("    SC certificate NOT verified (insecure)")
        for ps in p.services:
            proxy = f" (PROXY protocol v{ps.proxy_protocol})" if ps.proxy_protocol else ""
            idle = f", idle_timeout {ps.idle_timeout:g} s" if ps.idle_timeout else ""
            lines.append(
                f"    service '{ps.name}' {ps.uuid} -> {ps.hostname}:{ps.port}{proxy}{idle}"
            )
    return lines
