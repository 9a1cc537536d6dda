"""proxy_php — the stand-in for the original edgerq's ``proxy.php``.

A small HTTP front end on the public host that forwards every request
(method, path, query string, headers, body) to an SC service port
(``UPSTREAM``, default ``http://sc:3000``) and streams the answer back.

* pooled ``requests`` sessions per worker process (keep-alive to the SC); a
  request without a body is sent once more if its pooled connection turns
  out to have been closed by the other end (see ``_StaleConnectionRetry``);
* request and response bodies are streamed, never held whole in memory;
* hop-by-hop headers (RFC 9110 7.6.1, and those named in ``Connection``) are
  dropped both ways; ``X-Forwarded-*`` headers are added;
* tunnel failures become gateway errors: no connection to the SC → 502,
  timeout → 504. The SC's own ``http`` service type answers 502/503/504 when
  the tunnel cannot serve; those pass through unchanged.

``/__proxy/health`` is answered here (it checks the proxy, not the tunnel).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import IO, Any

import requests
from flask import Flask, Response, request
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ReadTimeoutError
from urllib3.util.retry import Retry

UPSTREAM = os.environ.get("UPSTREAM", "http://sc:3000").rstrip("/")
CONNECT_TIMEOUT = float(os.environ.get("CONNECT_TIMEOUT", "5"))
READ_TIMEOUT = float(os.environ.get("READ_TIMEOUT", "30"))
POOL_SIZE = int(os.environ.get("POOL_SIZE", "32"))
CHUNK = 64 * 1024

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
# set by requests/urllib3 or by us for the upstream hop
REQUEST_SKIP = HOP_BY_HOP | {"host", "content-length"}
# gunicorn writes its own Date and Server headers
RESPONSE_SKIP = HOP_BY_HOP | {"date", "server"}

# under gunicorn, log through its error logger (timestamped, to stderr)
log = logging.getLogger("gunicorn.error")
app = Flask(__name__)


class _StaleConnectionRetry(Retry):
    """One retry for a request that has no body to replay, when the pooled
    keep-alive connection died before any answer came back.

    The upstream may close an idle keep-alive connection at the moment we
    send a request on it; behind a tunnel that close takes a while to reach
    us, so the window is wider than on a LAN. Like nginx's default
    ``proxy_next_upstream error``, such a request is sent once more on a new
    connection. Timeouts are not retried: they still become 504 at once.
    """

    def increment(self, *args: Any, **kwargs: Any) -> Retry:
        if isinstance(kwargs.get("error"), ReadTimeoutError):
            raise kwargs["error"]
        return super().increment(*args, **kwargs)


def _session_with(retries: Retry | int) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # never route the tunnel through an environment proxy
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=retries)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


# requests without a body (GET, HEAD, OPTIONS) may be sent again; others never are
_retrying = _session_with(
    _StaleConnectionRetry(
        total=1,
        connect=1,
        read=1,
        status=0,
        other=0,
        redirect=0,
        allowed_methods=frozenset({"GET", "HEAD", "OPTIONS"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )
)
_plain = _session_with(0)


def _connection_tokens(headers: object) -> set[str]:
    value = headers.get("Connection", "")  # type: ignore[attr-defined]
    return {t.strip().lower() for t in value.split(",") if t.strip()}


class _SizedBody:
    """A request body stream of known length: requests sends Content-Length."""

    def __init__(self, stream: IO[bytes], length: int) -> None:
        self._stream = stream
        self.len = length

    def read(self, size: int = -1) -> bytes:
        return self._stream.read(size)


def _chunked_body(stream: IO[bytes]) -> Iterator[bytes]:
    while chunk := stream.read(CHUNK):
        yield chunk


def _error(status: int, message: str) -> Response:
    return Response(f"{status} {message}\n", status=status, mimetype="text/plain")


@app.get("/__proxy/health")
def health() -> Response:
    return Response(b"ok\n", mimetype="text/plain")


@app.route(
    "/",
    defaults={"path": ""},
    methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
)
@app.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def forward(path: str) -> Response:
    drop = REQUEST_SKIP | _connection_tokens(request.headers)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in drop}
    client = request.remote_addr or ""
    prior = request.headers.get("X-Forwarded-For")
    headers["X-Forwarded-For"] = f"{prior}, {client}" if prior else client
    headers["X-Forwarded-Host"] = request.host
    headers["X-Forwarded-Proto"] = request.scheme

    body: object = None
    if request.content_length:
        body = _SizedBody(request.stream, request.content_length)
    elif "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        body = _chunked_body(request.stream)

    url = UPSTREAM + request.full_path if request.query_string else UPSTREAM + request.path
    session = _plain if body is not None else _retrying
    try:
        upstream = session.request(
            request.method,
            url,
            headers=headers,
            data=body,
            stream=True,
            allow_redirects=False,
            timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
        )
    except requests.Timeout as exc:
        log.warning("upstream timeout: %s %s: %s", request.method, url, exc)
        return _error(504, "Gateway Timeout: the tunnel did not answer in time")
    except requests.RequestException as exc:
        log.warning("upstream error: %s %s: %s", request.method, url, exc)
        return _error(502, "Bad Gateway: the tunnel could not be reached")

    drop_resp = RESPONSE_SKIP | _connection_tokens(upstream.headers)
    out_headers = [(k, v) for k, v in upstream.raw.headers.items() if k.lower() not in drop_resp]

    def relay() -> Iterator[bytes]:
        try:
            # raw bytes: Content-Encoding and Content-Length stay valid
            yield from upstream.raw.stream(CHUNK, decode_content=False)
        except Exception as exc:  # the client sees a truncated body
            log.warning("upstream broke mid-body: %s %s: %s", request.method, url, exc)
            raise
        finally:
            upstream.close()

    resp = Response(relay(), status=upstream.status_code, headers=out_headers)
    resp.direct_passthrough = True
    return resp
