"""proxy_php — the stand-in for the original edgerq's ``proxy.php``.

A small HTTP front end on the public host that forwards every request
(method, path, query string, headers, body) to an SC service port
(``UPSTREAM``, default ``http://sc:3000``) and streams the answer back.

* one asyncio process (aiohttp server and client, its C HTTP parser): a
  request costs a fraction of what Flask + ``requests`` under gunicorn's
  threads cost, and no request waits for a thread or for the GIL;
* pooled keep-alive connections to the SC (``POOL_SIZE`` at most, idle ones
  kept ``UPSTREAM_KEEPALIVE`` seconds). An idempotent request (GET, HEAD,
  OPTIONS, PUT, DELETE) whose pooled connection turns out to have been
  closed by the other end before any answer came is sent once more on a new
  connection, when its body was not read yet (RFC 9112 9.3.1; like nginx's
  ``proxy_next_upstream error``); behind a tunnel such a close takes a while
  to reach us, so the window is wider than on a LAN;
* request and response bodies are streamed, never held whole in memory:
  a request with ``Content-Length`` goes upstream with it, a chunked one
  chunked; a response keeps its ``Content-Length``, or is sent chunked;
* hop-by-hop headers (RFC 9110 7.6.1, and those named in ``Connection``) are
  dropped both ways; ``X-Forwarded-For``/``-Host``/``-Proto`` are added;
* tunnel failures become gateway errors: no connection to the SC → 502,
  timeout (connect or read) → 504. The SC's own ``http`` service type
  answers 502/503/504 when the tunnel cannot serve; those pass through.
  A body that breaks off midway is cut off for the client too (the
  connection is closed, never a clean end).

``/__proxy/health`` is answered here (it checks the proxy, not the tunnel).
Run it under gunicorn (``gunicorn.conf.py``: aiohttp's worker) or directly
(``python app.py``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping

from aiohttp import ClientError, ClientSession, ClientTimeout, DummyCookieJar, TCPConnector, web
from multidict import CIMultiDict
from yarl import URL

UPSTREAM = os.environ.get("UPSTREAM", "http://sc:3000").rstrip("/")
CONNECT_TIMEOUT = float(os.environ.get("CONNECT_TIMEOUT", "5"))
READ_TIMEOUT = float(os.environ.get("READ_TIMEOUT", "30"))
POOL_SIZE = int(os.environ.get("POOL_SIZE", "128"))  # the SC allows 200 connections
UPSTREAM_KEEPALIVE = float(os.environ.get("UPSTREAM_KEEPALIVE", "30"))  # below the SC's idle limits

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# set by the client for the upstream hop (Host, framing); "Expect: 100-continue"
# was answered here already, the body follows without waiting
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length", "expect"}
# the server writes its own Date, Server and framing headers
RESPONSE_SKIP = HOP_BY_HOP | {"date", "server", "content-length"}

# under gunicorn, log through its error logger (timestamped, to stderr)
log = logging.getLogger("gunicorn.error")
SESSION = web.AppKey("session", ClientSession)


def _connection_tokens(headers: Mapping[str, str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):  # type: ignore[attr-defined]
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=f"{status} {message}\n", content_type="text/plain")


async def health(request: web.Request) -> web.Response:
    return web.Response(body=b"ok\n", content_type="text/plain")


def _upstream_headers(request: web.Request) -> CIMultiDict[str]:
    drop = REQUEST_SKIP | _connection_tokens(request.headers)
    headers: CIMultiDict[str] = CIMultiDict(
        (k, v) for k, v in request.headers.items() if k.lower() not in drop
    )
    client = request.remote or ""
    prior = ", ".join(request.headers.getall("X-Forwarded-For", ()))
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme
    if request.content_length is not None:
        headers["Content-Length"] = str(request.content_length)
    return headers


async def forward(request: web.Request) -> web.StreamResponse:
    if request.method not in METHODS:
        return web.Response(status=405, headers={"Allow": ", ".join(sorted(METHODS))})
    headers = _upstream_headers(request)
    # a body with Content-Length goes with it; one without (chunked) goes chunked
    body = request.content if request.body_exists else None
    # as it came, percent-escapes and all (not normalised: %2F stays %2F)
    url = URL(UPSTREAM + request.raw_path, encoded=True)
    session = request.app[SESSION]
    try:
        upstream = await session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            allow_redirects=False,
            auto_decompress=False,
        )
    except TimeoutError as exc:
        log.warning("upstream timeout: %s %s: %r", request.method, url, exc)
        return _error(504, "Gateway Timeout: the tunnel did not answer in time")
    except (ClientError, OSError) as exc:
        log.warning("upstream error: %s %s: %r", request.method, url, exc)
        return _error(502, "Bad Gateway: the tunnel could not be reached")

    try:
        drop = RESPONSE_SKIP | _connection_tokens(upstream.headers)
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in drop:
                resp.headers.add(k, v)
        length = upstream.headers.get("Content-Length")
        if length is not None and "Transfer-Encoding" not in upstream.headers:
            resp.content_length = int(length)
        await resp.prepare(request)
        while True:
            try:
                chunk = await upstream.content.readany()
            except (ClientError, TimeoutError) as exc:
                # the client must see a truncated body, not a clean end: close its connection
                log.warning("upstream broke mid-body: %s %s: %r", request.method, url, exc)
                upstream.close()
                if request.transport is not None:
                    request.transport.abort()
                return resp
            if not chunk:
                break
            try:
                await resp.write(chunk)
            except ConnectionError:  # the client went away: so does the upstream connection
                upstream.close()
                return resp
        await resp.write_eof()
        return resp
    finally:
        upstream.release()


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    connector = TCPConnector(
        limit=POOL_SIZE,
        limit_per_host=POOL_SIZE,
        keepalive_timeout=UPSTREAM_KEEPALIVE,
        use_dns_cache=False,  # resolve per new connection: the SC may come back with a new IP
    )
    timeout = ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    # no default headers of our own (User-Agent, Accept, Accept-Encoding, Content-Type):
    # the client's go upstream as they came
    async with ClientSession(
        connector=connector,
        timeout=timeout,
        skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        trust_env=False,  # never route the tunnel through an environment proxy
        cookie_jar=DummyCookieJar(),  # cookies pass through untouched, none kept between clients
    ) as session:
        app[SESSION] = session
        yield


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(_client_session)
    app.router.add_get("/__proxy/health", health)
    app.router.add_route("*", "/{path:.*}", forward)
    return app


async def app_factory() -> web.Application:
    """For gunicorn's aiohttp worker: ``gunicorn app:app_factory``."""
    return make_app()


if __name__ == "__main__":
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "info").upper())
    web.run_app(make_app(), port=int(os.environ.get("PORT", "8080")))
