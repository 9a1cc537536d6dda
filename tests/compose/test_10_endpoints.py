"""Every endpoint of the sample web server, reached through proxy → SC → tunnel → SP."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import requests

MIB = 1024 * 1024
STANDARD_ANSWER = b"edgerq sample webserver: standard answer\n"


def pattern_bytes(n: int) -> bytes:
    """The web server's /bytes/<n> body: byte i is i % 251."""
    return (bytes(range(251)) * (n // 251 + 1))[:n]


def test_standard_answer_for_any_path(http: requests.Session, proxy_url: str) -> None:
    for path in ("/", "/index.php", "/some/deep/path?x=1&y=%20z"):
        r = http.get(proxy_url + path, timeout=15)
        assert r.status_code == 200, path
        assert r.content == STANDARD_ANSWER, path


def test_health(http: requests.Session, proxy_url: str) -> None:
    r = http.get(f"{proxy_url}/health", timeout=15)
    assert (r.status_code, r.content) == (200, b"ok\n")


def test_post_echo_returns_body_method_and_query(http: requests.Session, proxy_url: str) -> None:
    body = os.urandom(100_000)
    r = http.post(
        f"{proxy_url}/echo?a=1&b=two",
        data=body,
        timeout=30,
        headers={"Content-Type": "application/octet-stream", "X-Custom": "kept"},
    )
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["X-Echo-Method"] == "POST"
    assert r.headers["X-Echo-Query"] == "a=1&b=two"
    assert r.headers["X-Body-SHA256"] == hashlib.sha256(body).hexdigest()


def test_query_reaches_the_server_as_sent(http: requests.Session, proxy_url: str) -> None:
    """Percent-escapes and '+' in the query are forwarded byte for byte, not re-encoded."""
    query = "a=%2F%20b&c=x+y&d=%C3%A9&e=%25"
    r = http.get(f"{proxy_url}/echo?{query}", timeout=15)
    assert r.status_code == 200
    assert r.headers["X-Echo-Query"] == query


def test_other_methods_echo(http: requests.Session, proxy_url: str) -> None:
    for method in ("PUT", "PATCH", "DELETE"):
        r = http.request(
            method, f"{proxy_url}/echo", data=b"payload-" + method.encode(), timeout=15
        )
        assert r.status_code == 200, method
        assert r.headers["X-Echo-Method"] == method
        assert r.content == b"payload-" + method.encode()


def test_chunked_upload_is_forwarded(http: requests.Session, proxy_url: str) -> None:
    chunks = [os.urandom(10_000) for _ in range(20)]

    def gen() -> Iterator[bytes]:
        yield from chunks  # requests sends Transfer-Encoding: chunked

    r = http.post(f"{proxy_url}/echo", data=gen(), timeout=30)
    assert r.status_code == 200
    assert r.content == b"".join(chunks)


def test_5mib_download_sha256(http: requests.Session, proxy_url: str) -> None:
    n = 5 * MIB
    r = http.get(f"{proxy_url}/bytes/{n}", timeout=60)
    assert r.status_code == 200
    digest = hashlib.sha256(r.content).hexdigest()
    assert len(r.content) == n
    assert digest == r.headers["X-Content-SHA256"]
    assert digest == hashlib.sha256(pattern_bytes(n)).hexdigest()


def test_5mib_upload_echo_sha256(http: requests.Session, proxy_url: str) -> None:
    body = os.urandom(5 * MIB)
    r = http.post(f"{proxy_url}/echo", data=body, timeout=60)
    assert r.status_code == 200
    assert r.headers["X-Body-SHA256"] == hashlib.sha256(body).hexdigest()  # server got it whole
    assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(body).hexdigest()


def test_chunked_stream(http: requests.Session, proxy_url: str) -> None:
    n = 2000
    with http.get(f"{proxy_url}/stream/{n}", stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding", "").lower() == "chunked"
        assert "Content-Length" not in r.headers
        body = b"".join(r.iter_content(chunk_size=None))
    lines = body.splitlines()
    assert len(lines) == n
    assert lines[0] == b"line 000000 edgerq stream"
    assert lines[-1] == b"line %06d edgerq stream" % (n - 1)


def test_delay(http: requests.Session, proxy_url: str) -> None:
    r = http.get(f"{proxy_url}/delay/300", timeout=15)
    assert r.status_code == 200
    assert r.content == STANDARD_ANSWER
    assert r.elapsed.total_seconds() >= 0.3


def test_keep_alive_many_requests_on_one_connection(http: requests.Session, proxy_url: str) -> None:
    for i in range(100):
        r = http.get(f"{proxy_url}/bytes/{1000 + i}", timeout=15)
        assert r.status_code == 200
        assert r.content == pattern_bytes(1000 + i)


def test_concurrent_requests(proxy_url: str) -> None:
    sizes = [64 * 1024 + i for i in range(40)]

    def fetch(n: int) -> bool:
        with requests.Session() as s:
            s.trust_env = False
            r = s.get(f"{proxy_url}/bytes/{n}", timeout=60)
            return r.status_code == 200 and r.content == pattern_bytes(n)

    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(fetch, sizes))
    assert all(results), f"{results.count(False)} of {len(results)} concurrent requests failed"
