"""servers.http11's one-pass head reader against the line-by-line one: the same answer, or it steps aside.

The line-by-line reader is the rule book (the contract suite holds all four servers to its statuses);
the one-pass reader is the fast path for well-formed heads. For every head here it must either give
exactly what the rule book gives, or return None and consume nothing, so that the rule book can say
what is wrong.
"""

from __future__ import annotations

import io

import pytest

from servers import http11

pytestmark = pytest.mark.unit

GOOD = [
    b"GET /json HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /json HTTP/1.0\r\n\r\n",
    b"POST /orders HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}",
    b"GET /q?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nUser-Agent: python/gevent-http-client-2.4.1\r\n"
    b"Accept-Encoding: gzip, deflate, br\r\nX-Empty:\r\nX-Pad: \t padded \t\r\n\r\n",
    b"M-SEARCH * HTTP/1.1\r\nHost: a\r\nX-Latin: caf\xe9\r\n\r\n",
]
BAD = [
    b"GET /json HTTP/1.1\nHost: a\n\n",  # bare LF
    b"GET /json HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obs-fold
    b"GET /json HTTP/1.1\r\nHost : a\r\n\r\n",  # whitespace before the colon
    b"GET /json HTTP/2.0\r\nHost: a\r\n\r\n",
    b"BREW /json HTTP/1.1\r\nHost: a\r\n\r\n",  # unknown method
    b"GET /j\xffson HTTP/1.1\r\nHost: a\r\n\r\n",  # non-ASCII target
    b"GET /json HTTP/1.1\r\nHost: a\x01b\r\n\r\n",  # control byte in a value
    b"GET /json HTTP/1.1\r\nHost: a\r\n",  # still arriving
    b"\r\nGET /json HTTP/1.1\r\nHost: a\r\n\r\n",  # an empty line first: the rule book skips it
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",  # over the line limit
    b"GET /json HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n",  # too many header lines
]


def reader(raw: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(raw), 65536)


def by_the_book(raw: bytes) -> tuple[str, str, str, list[tuple[str, str]]] | str:
    r = reader(raw)
    try:
        line = http11.read_line(r, "request line")
        while line == b"":
            line = http11.read_line(r, "request line")
        assert line is not None
        method, target, version = http11.parse_request_line(line)
        return method, target, version, http11.read_headers(r)
    except (http11.HttpError, EOFError) as exc:
        return f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("raw", GOOD)
def test_a_well_formed_head_reads_the_same_in_one_pass(raw: bytes) -> None:
    r = reader(raw)
    fast = http11.fast_head(r)
    assert fast is not None and fast == by_the_book(raw)
    _, _, _, headers = fast
    length = dict((k.lower(), v) for k, v in headers).get("content-length")
    assert r.read() == (raw[-int(length):] if length else b"")  # the head consumed, the body left


@pytest.mark.parametrize("raw", BAD)
def test_anything_else_is_left_to_the_rule_book_untouched(raw: bytes) -> None:
    r = reader(raw)
    assert http11.fast_head(r) is None
    assert r.read() == raw


def test_framing_rules_hold_on_either_path() -> None:
    with pytest.raises(http11.HttpError, match="requires a Host"):
        http11.check_framing("HTTP/1.1", [("User-Agent", "x")])
    with pytest.raises(http11.HttpError, match="ambiguous framing"):
        http11.check_framing("HTTP/1.1", [("Host", "a"), ("Content-Length", "2"),
                                          ("transfer-encoding", "chunked")])
    with pytest.raises(http11.HttpError, match="more than one Host"):
        http11.check_framing("HTTP/1.1", [("Host", "a"), ("HOST", "b")])
    with pytest.raises(http11.HttpError, match="not supported"):
        http11.check_framing("HTTP/1.1", [("Host", "a"), ("Transfer-Encoding", "gzip")])
    with pytest.raises(http11.HttpError, match="more than one Content-Length"):
        http11.check_framing("HTTP/1.1", [("Host", "a"), ("Content-Length", "1"), ("content-length", "1")])
    http11.check_framing("HTTP/1.0", [])
    http11.check_framing("HTTP/1.1", [("host", "a"), ("Transfer-Encoding", "Chunked")])


def test_headers_go_into_the_environ_by_wsgi_names_repeats_joined_underscores_left_out() -> None:
    environ: dict[str, object] = {"SERVER_NAME": "a"}
    http11.add_headers(environ, [("Host", "a"), ("Content-Type", "application/json"), ("Content-Length", "2"),
                                 ("X-Tag", "1"), ("x-tag", "2"), ("Cookie", "a=1"), ("Cookie", "b=2"),
                                 ("Content_Length", "999"), ("X_Forwarded_For", "evil")])
    assert environ == {"SERVER_NAME": "a", "HTTP_HOST": "a", "CONTENT_TYPE": "application/json",
                       "CONTENT_LENGTH": "2", "HTTP_X_TAG": "1,2", "HTTP_COOKIE": "a=1; b=2"}
    again: dict[str, object] = {}
    http11.add_headers(again, [("X-Tag", "3")])  # a remembered name gives the same key
    assert again == {"HTTP_X_TAG": "3"}


def test_a_request_without_a_body_reads_nothing_from_the_shared_input() -> None:
    body = http11.NO_BODY
    assert body.read() == b"" and body.read(10) == b"" and body.readline() == b""
    assert body.readlines() == [] and list(body) == []
