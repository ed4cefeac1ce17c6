"""The endpoint contract, written once: routing, parameter rules, SQL, payload shapes, errors.

Pure functions only (no I/O). Both apps (WSGI in sync_app, aiohttp in async_app) call these
and only map HTTP in and out, so the four servers cannot drift apart. `openapi.yaml` at the
repository root describes the same contract for machines.
"""

from __future__ import annotations

import html
import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus

JSON = "application/json"
TEXT = "text/plain"
HTML = "text/html; charset=utf-8"

HELLO = b"Hello, World!"
MAX_BODY_BYTES = 64 * 1024
WORLD_ROWS = 10_000
MAX_QUERIES = 500

# Lab endpoint limits: (default, lowest, highest).
IO_MS = (10, 0, 10_000)
HOLD_MS = (10, 0, 10_000)
CPU_N = (10_000, 1, 5_000_000)
BLOCK_MS = (200, 0, 10_000)

ITEM_MAX_CHARS = 200
QTY_MAX = 1_000_000
IDEMPOTENCY_KEY_MAX = 200
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")  # visible ASCII, no spaces

RETRY_AFTER_SECONDS = "1"
_PHRASES = {int(s): s.phrase for s in HTTPStatus}


# --- SQL (asyncpg's $n placeholders; `pyformat` converts for psycopg2) -------------------

SQL_WORLD = "SELECT id, randomnumber FROM world WHERE id = $1"
SQL_UPDATE_WORLD = "UPDATE world SET randomnumber = $1 WHERE id = $2"
SQL_FORTUNES = "SELECT id, message FROM fortune"
SQL_HOLD = "SELECT pg_sleep($1)"
SQL_HEALTH = "SELECT 1"
SQL_INSERT_ORDER = (
    "INSERT INTO orders (item, qty, idempotency_key) VALUES ($1, $2, $3) "
    "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id, item, qty"
)
SQL_ORDER_BY_KEY = "SELECT id, item, qty FROM orders WHERE idempotency_key = $1"
SQL_ORDER_BY_ID = "SELECT id, item, qty FROM orders WHERE id = $1"

_PLACEHOLDER = re.compile(r"\$(\d+)")


def pyformat(sql: str) -> str:
    """Turn `$1, $2` placeholders into psycopg2's `%s` (each used once, in order)."""
    numbers = [int(n) for n in _PLACEHOLDER.findall(sql)]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"placeholders must appear once each, in order: {sql}")
    return _PLACEHOLDER.sub("%s", sql)


def update_params(rows: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(randomNumber, id) parameters for SQL_UPDATE_WORLD from (id, randomNumber) rows, sorted by
    id so that concurrent batches take row locks in one order (no deadlocks)."""
    return [(number, wid) for wid, number in sorted(rows)]


# --- replies ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = field(default=())


class ContractError(Exception):
    """A request the contract refuses; carries the reply to send."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.body.decode())
        self.reply = reply


# Built once: json.dumps with any option builds a new encoder on every call.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(obj: object) -> bytes:
    return _ENCODE(obj).encode()


def error(status: int, code: str, detail: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
    return Reply(status, dumps({"error": code, "detail": detail}), JSON, headers)


def malformed_http(detail: str, status: int = 400) -> Reply:
    """HTTP that no parser accepts (request line, headers, framing); the runtime then closes."""
    return error(status, "bad_request", f"{detail}; send a valid HTTP/1.1 request")


def bad_request(detail: str) -> ContractError:
    return ContractError(error(400, "bad_request", detail))


def overloaded(detail: str) -> Reply:
    """The prompt 503 for an exhausted pool or in-flight limit."""
    return error(503, "overloaded", detail, (("Retry-After", RETRY_AFTER_SECONDS),))


def unhealthy(detail: str) -> Reply:
    return error(503, "unhealthy", detail, (("Retry-After", RETRY_AFTER_SECONDS),))


def inflight_timeout(max_inflight: int, timeout: float) -> Reply:
    return overloaded(
        f"all {max_inflight} in-flight request slots stayed busy for {timeout:g} s; retry later, or raise "
        "LAB_MAX_INFLIGHT (--max-inflight) / LAB_ACQUIRE_TIMEOUT (--acquire-timeout)"
    )


def pool_timeout(pool_size: int, timeout: float) -> Reply:
    return overloaded(
        f"no database connection free within {timeout:g} s (pool of {pool_size}); retry later, or raise "
        "LAB_POOL_SIZE (--pool-size) / LAB_ACQUIRE_TIMEOUT (--acquire-timeout)"
    )


def connection_limit(max_connections: int) -> Reply:
    return overloaded(
        f"the server holds {max_connections} open client connections, its limit; retry later, reuse "
        "connections, or raise LAB_MAX_CONNECTIONS (--max-connections)"
    )


def database_error(exc: BaseException) -> Reply:
    """503 for a database that fails or cannot be reached: the first line of the error, no traceback."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return unhealthy(f"database error: {first}; check that PostgreSQL is up and LAB_DATABASE_URL is right")


# Past the statement timeout, how long a server waits for an answer before it drops the connection:
# PostgreSQL's own statement_timeout ends a slow query; only an unreachable database needs this.
UNANSWERED_GRACE = 1.0


def order_session_lost(key: str | None) -> Reply:
    """503 for POST /orders whose database session was lost before the order's answer. Without a key
    the server cannot retry it safely (the order may have been committed); with one it has retried
    once already, on a new session."""
    if key is None:
        return unhealthy("the database session was lost while placing this order, so it was not confirmed; "
                         "send it again with an Idempotency-Key header (e.g. a UUID, the same on every "
                         "retry): with a key the server retries a lost session itself, and no retry can "
                         "place the order twice")
    return unhealthy("the database session was lost twice while placing this order, so it was not "
                     "confirmed; send it again with the same Idempotency-Key: no retry can place it twice")


def database_timeout(seconds: float) -> Reply:
    """503 for a statement that ran past LAB_STATEMENT_TIMEOUT, or got no answer at all."""
    return unhealthy(f"the database did not answer within {seconds:g} s; check that PostgreSQL is up and "
                     "not overloaded, or raise LAB_STATEMENT_TIMEOUT (--statement-timeout)")


def shutting_down() -> Reply:
    return unhealthy("the server is shutting down; retry on another instance")


def not_ready(detail: str) -> Reply:
    return unhealthy(f"database not ready: {detail}; check that PostgreSQL is up and "
                     "LAB_DATABASE_URL is right")


def request_timeout(seconds: float) -> Reply:
    """408 for a request whose head and body did not arrive within LAB_REQUEST_TIMEOUT."""
    return error(408, "request_timeout", f"the request did not arrive within {seconds:g} s; send it whole, "
                 "promptly (LAB_REQUEST_TIMEOUT / --request-timeout on the server)")


def wait_too_long(ahead: int, size: int, expected: float, timeout: float) -> Reply:
    """The fail-fast 503: the queue ahead cannot be served before the acquire deadline."""
    return overloaded(
        f"{ahead} requests wait for {size} database connections, about {expected:.2f} s of work, more "
        f"than the {timeout:g} s acquire timeout; retry later, or raise LAB_POOL_SIZE (--pool-size)"
    )


def too_large(length: int) -> Reply:
    return error(413, "payload_too_large", f"body is {length} bytes; the limit is {MAX_BODY_BYTES}")


def internal(detail: str = "unexpected server error; see the server log") -> Reply:
    return error(500, "internal", detail)


def raw_response(reply: Reply, server: str, date: str) -> bytes:
    """A complete `Connection: close` response, for runtimes answering outside their app."""
    lines = [f"HTTP/1.1 {reply.status} {_PHRASES.get(reply.status, 'Error')}", f"Server: {server}",
             f"Date: {date}", f"Content-Type: {reply.content_type}", f"Content-Length: {len(reply.body)}"]
    lines += [f"{k}: {v}" for k, v in reply.headers]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + reply.body


def http_date(now: float | None = None) -> str:
    """RFC 1123 date for the `Date` header."""
    return formatdate(now, usegmt=True)


def server_header(model: str) -> str:
    return f"serverlab-{model}"


# --- routing ------------------------------------------------------------------------------

# name -> path template; a server maps each name to its handler.
ROUTES: dict[str, tuple[str, frozenset[str]]] = {
    "json": ("/json", frozenset({"GET"})),
    "plaintext": ("/plaintext", frozenset({"GET"})),
    "db": ("/db", frozenset({"GET"})),
    "queries": ("/queries", frozenset({"GET"})),
    "updates": ("/updates", frozenset({"GET"})),
    "fortunes": ("/fortunes", frozenset({"GET"})),
    "io": ("/io", frozenset({"GET"})),
    "cpu": ("/cpu", frozenset({"GET"})),
    "hold": ("/hold", frozenset({"GET"})),
    "orders": ("/orders", frozenset({"POST"})),
    "order": ("/orders/{id}", frozenset({"GET"})),
    "health": ("/health", frozenset({"GET"})),
    "ready": ("/ready", frozenset({"GET"})),
    "metrics": ("/metrics", frozenset({"GET"})),
    "config": ("/config", frozenset({"GET"})),
    "block": ("/block", frozenset({"GET"})),  # lab only, 404 unless LAB_ALLOW_BLOCKING=1
}
_EXACT = {path: name for name, (path, _) in ROUTES.items() if "{" not in path}
_ORDER_PREFIX = "/orders/"

# Endpoints that neither count against the in-flight limit nor need the database.
UNLIMITED = frozenset({"health", "ready", "metrics", "config"})
# Endpoints whose work holds a pool connection (/ready has its own connection, outside the pool).
USES_DB = frozenset({"db", "queries", "updates", "fortunes", "hold", "orders", "order"})
# Endpoints that only read: after a lost connection they may run once more on a fresh one.
READS = frozenset({"db", "queries", "fortunes", "order"})


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    arg: str | None = None  # the `{id}` of /orders/{id}


_EXACT_ROUTES = {path: Route(name) for path, name in _EXACT.items()}


def route(method: str, path: str) -> Route:
    """Match a request; raises ContractError with the 404 or 405 reply."""
    found = _EXACT_ROUTES.get(path)  # the common case: one Route per path, made once (frozen, shared)
    if found is not None and method in ROUTES[found.name][1]:
        return found
    name = _EXACT.get(path)
    arg = None
    if name is None and path.startswith(_ORDER_PREFIX) and "/" not in path[len(_ORDER_PREFIX) :]:
        name, arg = "order", path[len(_ORDER_PREFIX) :]
    if name is None:
        detail = f"no endpoint at {path}; the endpoints are listed in openapi.yaml in the repository"
        raise ContractError(error(404, "not_found", detail))
    methods = ROUTES[name][1]
    if method not in methods and not (method == "HEAD" and "GET" in methods):
        allowed = ", ".join(sorted(methods))
        raise ContractError(
            error(405, "method_not_allowed", f"{method} {path}: use {allowed}", (("Allow", allowed),))
        )
    return Route(name, arg)


# The low-cardinality endpoint label for metrics: the path template; "unmatched" for the rest.
METRICS_LABELS: dict[str, str] = {name: path for name, (path, _) in ROUTES.items()}


# --- parameters ---------------------------------------------------------------------------


def clamp_queries(raw: str | None) -> int:
    """TechEmpower rule: missing, non-integer or < 1 means 1; above 500 means 500."""
    try:
        n = int(raw) if raw is not None else 1
    except ValueError:
        return 1
    return max(1, min(MAX_QUERIES, n))


def int_param(name: str, raw: str | None, limits: tuple[int, int, int]) -> int:
    """A lab parameter: missing takes the default; anything malformed or out of range is a 400."""
    default, low, high = limits
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[+-]?\d{1,12}", text):
        raise bad_request(f"{name} must be an integer from {low} to {high}, got {raw!r}")
    value = int(text)
    if not low <= value <= high:
        raise bad_request(f"{name} must be from {low} to {high}, got {value}")
    return value


_random = random.random


def random_id() -> int:
    """A World id, uniform over 1..10000 (random() is one C call; randint is five Python ones)."""
    return 1 + int(_random() * WORLD_ROWS)


def random_ids(n: int, distinct: bool = False) -> list[int]:
    """World ids for one request; /updates uses distinct ids so each row is written once."""
    if distinct:
        return random.sample(range(1, WORLD_ROWS + 1), n)
    return [1 + int(_random() * WORLD_ROWS) for _ in range(n)]


def new_numbers(n: int) -> list[int]:
    return [1 + int(_random() * WORLD_ROWS) for _ in range(n)]


# --- payloads -----------------------------------------------------------------------------

JSON_BODY = dumps({"message": "Hello, World!"})


def world(row: Sequence[int]) -> dict[str, int]:
    return {"id": row[0], "randomNumber": row[1]}


def world_reply(row: Sequence[int] | None) -> Reply:
    if row is None:  # only if the seed is missing
        return error(503, "not_seeded", "table world is empty; run `make up` to seed it",
                     (("Retry-After", RETRY_AFTER_SECONDS),))
    return Reply(200, dumps(world(row)))


def worlds_reply(rows: Iterable[Sequence[int]]) -> Reply:
    return Reply(200, dumps([world(r) for r in rows]))


EXTRA_FORTUNE = (0, "Additional fortune added at request time.")
_FORTUNES_HEAD = (
    "<!DOCTYPE html><html><head><title>Fortunes</title></head><body>"
    "<table><tr><th>id</th><th>message</th></tr>"
)
_FORTUNES_TAIL = "</table></body></html>"


def fortunes_reply(rows: Iterable[Sequence[object]]) -> Reply:
    """All rows plus the request-time fortune, sorted by message, every message escaped."""
    fortunes = [(int(str(r[0])), str(r[1])) for r in rows]
    fortunes.append(EXTRA_FORTUNE)
    fortunes.sort(key=lambda f: f[1])
    cells = "".join(
        f"<tr><td>{fid}</td><td>{html.escape(message)}</td></tr>" for fid, message in fortunes
    )
    return Reply(200, (_FORTUNES_HEAD + cells + _FORTUNES_TAIL).encode(), HTML)


def io_reply(ms: int) -> Reply:
    return Reply(200, dumps({"waited_ms": ms}))


def cpu_work(n: int) -> int:
    """Pure-Python work of size n (one loop step per unit) with a deterministic result."""
    acc = 0
    for i in range(n):
        acc = (acc * 31 + i) & 0xFFFFFFFF
    return acc


def cpu_reply(n: int) -> Reply:
    return Reply(200, dumps({"n": n, "result": cpu_work(n)}))


def block_reply(ms: int | None) -> Reply:
    """GET /block: what was blocked, or (ms None) the 404 of a server without LAB_ALLOW_BLOCKING=1."""
    if ms is None:
        return error(404, "not_found", "/block is off: start the server with LAB_ALLOW_BLOCKING=1 "
                     "(--allow-blocking 1); it is a lab-only endpoint for `make claims`")
    return Reply(200, dumps({"blocked_ms": ms}))


def hold_reply(ms: int) -> Reply:
    return Reply(200, dumps({"held_ms": ms}))


def health_reply() -> Reply:
    return Reply(200, dumps({"status": "ok"}))


def ready_reply() -> Reply:
    return Reply(200, dumps({"status": "ready"}))


def config_reply(settings: Mapping[str, object]) -> Reply:
    return Reply(200, dumps(dict(settings)))


# --- orders -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Order:
    item: str
    qty: int


def check_json_type(content_type: str | None) -> None:
    """POST /orders takes application/json only (parameters such as charset=utf-8 are fine): 415 else."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = f"Content-Type {content_type[:60]!r}" if content_type else "no Content-Type"
        raise ContractError(error(415, "unsupported_media_type",
                                  f"{shown}: send the order as JSON with Content-Type: application/json"))


def parse_order(body: bytes) -> Order:
    """Validate a POST /orders body: {"item": non-empty string, "qty": positive integer}."""
    if len(body) > MAX_BODY_BYTES:
        raise ContractError(too_large(len(body)))
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad_request(f"body must be JSON like {{\"item\": \"book\", \"qty\": 2}}: {exc}") from None
    except RecursionError:  # e.g. 60 KB of "[": the parser's stack, not the server, gives out
        raise bad_request("body nests arrays or objects too deeply; an order is one flat JSON object"
                          ) from None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object with fields item and qty")
    unknown = sorted(set(data) - {"item", "qty"})
    if unknown:
        raise bad_request(f"unknown fields {unknown}; an order has only item and qty")
    item, qty = data.get("item"), data.get("qty")
    if not isinstance(item, str) or not item.strip():
        raise bad_request("item must be a non-empty string")
    if len(item) > ITEM_MAX_CHARS:
        raise bad_request(f"item must be at most {ITEM_MAX_CHARS} characters, got {len(item)}")
    if "\x00" in item:
        raise bad_request("item must not contain NUL characters")
    try:
        item.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800": valid JSON, not valid text
        raise bad_request("item must be valid Unicode text (no unpaired surrogate escapes like \\ud800)"
                          ) from None
    if isinstance(qty, bool) or not isinstance(qty, int):
        raise bad_request(f"qty must be an integer from 1 to {QTY_MAX}")
    if not 1 <= qty <= QTY_MAX:
        raise bad_request(f"qty must be from 1 to {QTY_MAX}, got {qty}")
    return Order(item, qty)


def parse_idempotency_key(raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _KEY_RE.fullmatch(raw):
        raise bad_request(
            f"Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        )
    return raw


def parse_order_id(raw: str | None) -> int:
    if raw is None or not re.fullmatch(r"\d{1,18}", raw) or int(raw) < 1:
        raise bad_request(f"order id must be a positive integer, got {raw!r}")
    return int(raw)


def order_dict(row: Sequence[object]) -> dict[str, object]:
    return {"id": row[0], "item": row[1], "qty": row[2]}


def order_created_reply(row: Sequence[object], replayed: bool, order: Order | None = None) -> Reply:
    """201 for a new order; 200 with Idempotent-Replayed for a key seen before with the same order;
    422 when the key was used for a different order (as the IETF Idempotency-Key draft says)."""
    if replayed:
        if order is not None and (row[1], row[2]) != (order.item, order.qty):
            return error(422, "idempotency_key_reused",
                         f"this Idempotency-Key was used for a different order (id {row[0]}); "
                         "use a new key for a new order, or resend the first order unchanged")
        return Reply(200, dumps(order_dict(row)), JSON, (("Idempotent-Replayed", "true"),))
    return Reply(201, dumps(order_dict(row)), JSON, (("Location", f"/orders/{row[0]}"),))


def order_reply(row: Sequence[object] | None, order_id: int) -> Reply:
    if row is None:
        return error(404, "not_found", f"no order {order_id}")
    return Reply(200, dumps(order_dict(row)))
