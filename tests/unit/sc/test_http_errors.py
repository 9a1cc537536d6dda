"""The short HTTP answers of an ``http`` service parse as valid HTTP/1.1 responses."""

from __future__ import annotations

import http.client
import io

import pytest

from edgerq.sc.http_errors import error_response


class _Socket:
    """Just enough of a socket for http.client.HTTPResponse to read from."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)

    def makefile(self, mode: str) -> io.BytesIO:
        return self._file


def parse(data: bytes) -> tuple[http.client.HTTPResponse, bytes]:
    response = http.client.HTTPResponse(_Socket(data))  # type: ignore[arg-type]
    response.begin()
    return response, response.read()


@pytest.mark.parametrize(
    ("status", "reason"),
    [(502, "Bad Gateway"), (503, "Service Unavailable"), (504, "Gateway Timeout")],
)
def test_error_response_is_valid_http(status: int, reason: str) -> None:
    data = error_response(status, "no SP has registered this service")
    assert data.startswith(f"HTTP/1.1 {status} {reason}\r\n".encode())
    response, body = parse(data)
    assert response.version == 11
    assert response.status == status
    assert response.reason == reason
    assert response.getheader("Connection") == "close"
    assert response.getheader("Content-Type", "").startswith("text/plain")
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert body == b"edgerq: no SP has registered this service\n"
    head, sep, raw_body = data.partition(b"\r\n\r\n")
    assert sep and raw_body == body
    assert b"\n" not in head.replace(b"\r\n", b"")


def test_content_length_counts_bytes_not_characters() -> None:
    response, body = parse(error_response(504, "délai dépassé ✓"))
    assert int(response.getheader("Content-Length", "-1")) == len(body)
    assert body.decode() == "edgerq: délai dépassé ✓\n"


def test_body_is_one_line() -> None:
    _, body = parse(error_response(503, "over max_connections"))
    assert body.count(b"\n") == 1 and body.endswith(b"\n")
