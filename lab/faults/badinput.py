"""The bad-input table: hostile or broken requests, each with the status all four servers must give.

Every kind is sent on a fresh connection. The rules: no 5xx, and the same status from every server.
HTTP framing follows RFC 9112 where it says MUST (Host required and single, no obs-fold, CRLF line
ends, never both Content-Length and Transfer-Encoding, no space before the colon).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from lab.faults import wire

H = "Host: lab\r\n"
HB = H.encode()
MAX = 64 * 1024


def _post_orders(body: bytes, ctype: str = "application/json", extra: str = "") -> bytes:
    head = (
        f"POST /orders HTTP/1.1\r\n{H}Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


def _get(target: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + target + b" HTTP/1.1\r\n" + HB + extra + b"Connection: close\r\n\r\n"


@dataclass(frozen=True)
class Kind:
    name: str
    raw: bytes
    expect: int  # the status every server must give
    why: str


KINDS: list[Kind] = [
    # --- the request line
    Kind("garbage_line", b"GARBAGE\r\n\r\n", 400, "no method, target and version"),
    Kind("tls_hello", bytes.fromhex("16030100a5010000a10303") + b"\x00" * 40, 400, "TLS spoken to HTTP"),
    Kind("http09_line", b"GET /json\r\n\r\n", 400, "no protocol version"),
    Kind("http2_line", b"GET /json HTTP/2.0\r\n" + HB + b"\r\n", 400, "HTTP/2 is not spoken here"),
    Kind("http_bad_version", b"GET /json HTTP/1.x\r\n" + HB + b"\r\n", 400, "malformed version"),
    Kind("method_token", b"G(E)T /json HTTP/1.1\r\n" + HB + b"\r\n", 400, "not a token"),
    Kind("unknown_method", b"FOO /json HTTP/1.1\r\n" + HB + b"\r\n", 400, "no server knows FOO"),
    Kind("lowercase_method", b"get /json HTTP/1.1\r\n" + HB + b"\r\n", 400, "methods are case-sensitive"),
    Kind(
        "known_method_wrong",
        b"PUT /json HTTP/1.1\r\n" + HB + b"Content-Length: 0\r\n\r\n",
        405,
        "a real method /json does not allow",
    ),
    Kind(
        "long_request_line",
        b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n" + HB + b"\r\n",
        400,
        "a 100 KB request line",
    ),
    Kind("bare_lf_request_line", b"GET /json HTTP/1.1\n" + HB + b"\r\n", 400, "LF without CR"),
    Kind("ctl_in_target", b"GET /js\x01on HTTP/1.1\r\n" + HB + b"\r\n", 400, "a control byte"),
    Kind("non_utf8_path_raw", b"GET /caf\xff HTTP/1.1\r\n" + HB + b"\r\n", 400, "a raw non-ASCII byte"),
    Kind("non_utf8_path_pct", _get(b"/caf%FF"), 404, "percent-encoded, not UTF-8: no such path"),
    Kind("asterisk_target", b"OPTIONS * HTTP/1.1\r\n" + HB + b"\r\n", 404, "asterisk-form"),
    # --- the header section
    Kind("missing_host", b"GET /json HTTP/1.1\r\nConnection: close\r\n\r\n", 400, "HTTP/1.1 requires Host"),
    Kind("two_hosts", b"GET /json HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, "Host must be single"),
    Kind("obs_fold", b"GET /json HTTP/1.1\r\n" + HB + b"X-A: a\r\n b\r\n\r\n", 400, "obsolete line folding"),
    Kind("bare_lf_header", b"GET /json HTTP/1.1\r\n" + HB + b"X-A: a\nX-B: b\r\n\r\n", 400, "LF without CR"),
    Kind(
        "space_before_colon",
        b"GET /json HTTP/1.1\r\n" + HB + b"X-A : a\r\n\r\n",
        400,
        "whitespace before the colon",
    ),
    Kind("no_colon", b"GET /json HTTP/1.1\r\n" + HB + b"no colon here\r\n\r\n", 400, "not a header"),
    Kind("empty_name", b"GET /json HTTP/1.1\r\n" + HB + b": x\r\n\r\n", 400, "empty field name"),
    Kind("nul_in_value", b"GET /json HTTP/1.1\r\n" + HB + b"X-A: a\x00b\r\n\r\n", 400, "NUL byte"),
    Kind(
        "long_header",
        b"GET /json HTTP/1.1\r\n" + HB + b"X-A: " + b"a" * 100_000 + b"\r\n\r\n",
        400,
        "a 100 KB header line",
    ),
    Kind(
        "many_headers",
        b"GET /json HTTP/1.1\r\n" + HB + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n",
        400,
        "200 header lines",
    ),
    # --- framing
    Kind(
        "cl_and_te",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "both framings: request smuggling",
    ),
    Kind(
        "cl_not_number",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Length: ten\r\n\r\n",
        400,
        "Content-Length: ten",
    ),
    Kind(
        "cl_negative",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Length: -1\r\n\r\n",
        400,
        "Content-Length: -1",
    ),
    Kind(
        "cl_plus",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Length: +2\r\n\r\n{}",
        400,
        "Content-Length: +2",
    ),
    Kind(
        "cl_twice_differ",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        400,
        "two different lengths",
    ),
    Kind(
        "te_gzip",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Transfer-Encoding: gzip\r\n\r\n",
        400,
        "a transfer coding nobody here decodes",
    ),
    Kind(
        "chunk_size_junk",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        400,
        "chunk size zz",
    ),
    Kind(
        "chunk_size_huge",
        b"POST /orders HTTP/1.1\r\n"
        + HB
        + b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n",
        400,
        "a chunk bigger than any limit",
    ),
    Kind(
        "cl_over_limit",
        b"POST /orders HTTP/1.1\r\n" + HB + b"Content-Type: application/json\r\n"
        b"Content-Length: 10000000\r\n\r\n",
        413,
        "10 MB announced, nothing sent",
    ),
    # --- the body of POST /orders
    Kind("nested_arrays_60k", _post_orders(b"[" * 60_000), 400, "60 KB of ["),
    Kind(
        "nested_objects", _post_orders(b'{"a":' * 10_000 + b"1" + b"}" * 10_000), 400, "10,000 nested objects"
    ),
    Kind("lone_surrogate", _post_orders(b'{"item": "a\\ud800b", "qty": 1}'), 400, "not encodable as UTF-8"),
    Kind("text_plain", _post_orders(b'{"item": "book", "qty": 1}', "text/plain"), 415, "not JSON by type"),
    Kind(
        "form_encoded",
        _post_orders(b"item=book&qty=1", "application/x-www-form-urlencoded"),
        415,
        "a form, not JSON",
    ),
    Kind("nan_qty", _post_orders(b'{"item": "book", "qty": NaN}'), 400, "NaN is not JSON"),
    Kind(
        "huge_int_qty",
        _post_orders(b'{"item": "book", "qty": 1' + b"0" * 5000 + b"}"),
        400,
        "a 5,000-digit integer",
    ),
    Kind("invalid_utf8", _post_orders(b'{"item": "\xff", "qty": 1}'), 400, "not UTF-8"),
    Kind(
        "idempotency_key_unicode",
        _post_orders(b'{"item": "book", "qty": 1}', extra="Idempotency-Key: caf\xe9\r\n"),
        400,
        "not ASCII",
    ),
    # --- parameters
    Kind("ms_nul", _get(b"/hold?ms=%00"), 400, "a NUL in a number"),
    Kind("ms_huge", _get(b"/io?ms=99999999999999999999"), 400, "20 digits"),
    Kind("order_id_huge", _get(b"/orders/99999999999999999999"), 400, "20 digits"),
    Kind("query_bad_pct", _get(b"/queries?queries=%zz"), 200, "TechEmpower's rule: treated as 1"),
]


def run_kind(url: str, kind: Kind, timeout: float = 10.0) -> wire.Answer:
    return wire.exchange(url, kind.raw, timeout)


def idempotency_conflict(url: str, key: str) -> tuple[int, int]:
    """(status of a first order, status of the same Idempotency-Key with another body)."""
    first = wire.request(
        url,
        "POST",
        "/orders",
        json.dumps({"item": f"first {key}", "qty": 1}).encode(),
        {"Content-Type": "application/json", "Idempotency-Key": key},
    )
    other = wire.request(
        url,
        "POST",
        "/orders",
        json.dumps({"item": f"other {key}", "qty": 2}).encode(),
        {"Content-Type": "application/json", "Idempotency-Key": key},
    )
    return first.status, other.status


def run_table(
    urls: dict[str, str], progress: Callable[[str], None] | None = None
) -> dict[str, dict[str, int]]:
    """{kind: {model: status}} for every kind and server (0: no answer)."""
    table: dict[str, dict[str, int]] = {}
    for kind in KINDS:
        table[kind.name] = {model: run_kind(url, kind).status for model, url in urls.items()}
        if progress:
            progress(kind.name)
    return table


if __name__ == "__main__":  # a probe by hand: python -m lab.faults.badinput http://127.0.0.1:8001 ...
    import sys
    import uuid

    urls = {f"s{i}": u for i, u in enumerate(sys.argv[1:])}
    rows = run_table(urls)
    for kind in KINDS:
        got = rows[kind.name]
        mark = "ok " if set(got.values()) == {kind.expect} else "BAD"
        print(f"{mark} {kind.name:24} want {kind.expect}  got {' '.join(str(v) for v in got.values())}")
    key = uuid.uuid4().hex
    print("idempotency conflict:", {m: idempotency_conflict(u, f"{key}-{m}") for m, u in urls.items()})
