"""The contract suite's HTTP client: every exchange goes through `Client.request`, which checks
the rules every response shares (headers, content type) and validates the status, headers and
body against openapi.yaml before a test sees the reply.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

import yaml
from openapi_core import OpenAPI
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator

from servers import contract
from servers.settings import DEFAULT_PORTS

OPENAPI_PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"
TIMEOUT = 10.0  # seconds; every request has one, so nothing hangs
DATE_SKEW = 5.0  # seconds a Date header may be off from this machine's clock

RFC1123 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT"
)
# Content types: exact, but for a charset suffix on JSON and plain text (and Prometheus'
# version parameter on /metrics).
JSON_TYPE = re.compile(r"application/json(; ?charset=utf-8)?", re.IGNORECASE)
TEXT_TYPE = re.compile(r"text/plain(; ?charset=utf-8)?", re.IGNORECASE)
METRICS_TYPE = re.compile(r"text/plain(; ?version=0\.0\.4)?(; ?charset=utf-8)?", re.IGNORECASE)
HTML_TYPE = re.compile(re.escape(contract.HTML))
SINGLE_HEADERS = ("Server", "Date", "Content-Length", "Content-Type")


class Server(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def url(self) -> str: ...


@dataclass(frozen=True)
class Reply:
    method: str
    target: str
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{self.what}: header {name} sent {len(values)} times"
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def content_type(self) -> str:
        return self.header("Content-Type") or ""

    @property
    def what(self) -> str:
        """The exchange in words, for assertion messages."""
        return f"{self.method} {self.target} -> {self.status} ({', '.join(self.all('Server'))})"


@cache
def openapi() -> OpenAPI:
    return OpenAPI.from_file_path(str(OPENAPI_PATH))


@cache
def openapi_document() -> dict[str, Any]:
    with OPENAPI_PATH.open(encoding="utf-8") as f:
        document: dict[str, Any] = yaml.safe_load(f)
    return document


_validate_lock = threading.Lock()  # openapi-core's caches are not documented as thread-safe


def expected_content_type(path: str, status: int) -> re.Pattern[str]:
    if status >= 300:
        return JSON_TYPE  # every error is JSON
    return {"/plaintext": TEXT_TYPE, "/metrics": METRICS_TYPE, "/fortunes": HTML_TYPE}.get(
        path, JSON_TYPE
    )


def check_common(model: str, reply: Reply) -> None:
    """Rules for every response of every server."""
    what = reply.what
    for name in SINGLE_HEADERS:
        assert len(reply.all(name)) == 1, f"{what}: want one {name} header, got {reply.all(name)}"
    # The Server header is the ONE header allowed to differ between the four servers.
    assert reply.header("Server") == contract.server_header(model), what
    date = reply.header("Date") or ""
    assert RFC1123.fullmatch(date), f"{what}: Date {date!r} is not RFC 1123"
    skew = abs(parsedate_to_datetime(date).timestamp() - time.time())
    assert skew <= DATE_SKEW, f"{what}: Date {date!r} is {skew:.1f} s off the clock"
    length = reply.header("Content-Length") or ""
    assert length.isdigit(), f"{what}: Content-Length {length!r}"
    if reply.method != "HEAD":
        assert int(length) == len(reply.body), f"{what}: Content-Length {length}, body {len(reply.body)}"
    assert not reply.all("Transfer-Encoding"), f"{what}: chunked, want Content-Length"
    path = urlsplit(reply.target).path
    pattern = expected_content_type(path, reply.status)
    assert pattern.fullmatch(reply.content_type), f"{what}: Content-Type {reply.content_type!r}"
    if reply.status == 405:
        assert reply.header("Allow"), f"{what}: 405 without Allow"
    if reply.status == 503:
        assert (reply.header("Retry-After") or "").isdigit(), f"{what}: 503 without Retry-After"


def check_openapi(
    model: str, reply: Reply, request_headers: Mapping[str, str], request_body: bytes | None
) -> None:
    """Validate status, headers and body against openapi.yaml (HEAD has no body to check)."""
    if reply.method == "HEAD":
        return
    parts = urlsplit(reply.target)
    request = MockRequest(
        # The document lists each model at its default port; tests run on free ports.
        host_url=f"http://127.0.0.1:{DEFAULT_PORTS[model]}",
        method=reply.method,
        path=parts.path,
        args=dict(parse_qsl(parts.query, keep_blank_values=True)),
        headers=dict(request_headers),
        data=request_body,
        content_type=request_headers.get("Content-Type", ""),
    )
    response = MockResponse(
        reply.body, reply.status, dict(reply.headers), content_type=reply.content_type
    )
    with _validate_lock:
        errors = list(openapi().iter_response_errors(request, response))
    if errors and all(isinstance(e, PathError) for e in errors):
        # No operation for this method and path: only 404 and 405 may answer it.
        assert reply.status in (404, 405), f"{reply.what}: not in openapi.yaml: {errors}"
        schema = openapi_document()["components"]["schemas"]["Error"]
        problems = [e.message for e in OAS31Validator(schema).iter_errors(reply.json())]
        assert not problems, f"{reply.what}: body {reply.body[:300]!r} breaks Error: {problems}"
        return
    assert not errors, (
        f"{reply.what}: breaks openapi.yaml: {[_explain(e) for e in errors]}; "
        f"body {reply.body[:300]!r}"
    )


def _explain(exc: Exception) -> str:
    causes = [repr(exc)]
    for sub in getattr(exc, "schema_errors", None) or ():
        causes.append(getattr(sub, "message", repr(sub)))
    cause = exc.__cause__
    if cause is not None:
        causes.append(repr(cause))
    return "; ".join(causes)


class Client:
    """Talks to one server; every exchange is checked before it is returned."""

    def __init__(self, server: Server, timeout: float = TIMEOUT) -> None:
        parts = urlsplit(server.url)
        self.model = server.model
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.timeout = timeout

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    @contextmanager
    def connection(self) -> Iterator[http.client.HTTPConnection]:
        """One persistent (keep-alive) connection for several requests."""
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        conn: http.client.HTTPConnection | None = None,
    ) -> Reply:
        """Send `method target` (path and query, sent as given) and check the reply."""
        sent = dict(headers or {})
        own = conn is None
        connection = conn or self.connect()
        try:
            connection.request(method, target, body=body, headers=sent)
            response = connection.getresponse()
            data = response.read()
        finally:
            if own:
                connection.close()
        reply = Reply(method, target, response.status, tuple(response.getheaders()), data)
        check_common(self.model, reply)
        check_openapi(self.model, reply, sent, body)
        return reply

    def get(self, target: str, **kwargs: Any) -> Reply:
        return self.request("GET", target, **kwargs)

    def post_json(
        self, target: str, payload: Any, headers: Mapping[str, str] | None = None
    ) -> Reply:
        body = json.dumps(payload).encode()
        return self.post(target, body, headers)

    def post(self, target: str, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        sent = {"Content-Type": "application/json", **(headers or {})}
        return self.request("POST", target, body=body, headers=sent)


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text, or None when absent."""
    label_text = ",".join(f'{k}="{v}"' for k, v in (labels or {}).items())
    wanted = f"{name}{{{label_text}}}" if label_text else name
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, _, value = line.rpartition(" ")
        if _canonical(key) == _canonical(wanted):
            return float(value)
    return None


def _canonical(sample: str) -> str:
    """A sample name with its labels sorted, so label order does not matter."""
    name, _, rest = sample.partition("{")
    if not rest:
        return name
    labels = sorted(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', rest.rstrip("}")))
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in labels) + "}"
