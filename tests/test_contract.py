"""The endpoint contract (issue 2), held against all four servers as real processes.

Every test that takes `server` runs once per model (ids: threaded, gevent, asyncio, multiproc).
Every request goes through `tests.contract_client.Client`, which checks the rules shared by all
responses (Server, Date, Content-Length, content type) and validates status, headers and body
against openapi.yaml. Where the contract module defines an exact reply, it is the oracle: the
expected bytes come from calling `servers.contract`, never from re-implementing it here.

Identical behaviour is the point. The ONE header allowed to differ between the four servers is
`Server` (`serverlab-<model>`); `Date` differs only because time passes.
"""

from __future__ import annotations

import html
import http.client
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import psutil
import pytest

from lab.stack.procs import ServerProcess
from servers import contract
from servers.settings import MODELS
from tests.conftest import compose_mode
from tests.contract_client import TIMEOUT, Client, Reply, check_common, metric_value

pytestmark = pytest.mark.integration

MAX = contract.MAX_BODY_BYTES


@pytest.fixture
def client(server: ServerProcess) -> Client:
    return Client(server)


def contract_refusal(call: Callable[[], object]) -> contract.Reply:
    """The reply the contract module gives for input it refuses (the oracle for error bodies)."""
    with pytest.raises(contract.ContractError) as caught:
        call()
    return caught.value.reply


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, f"{reply.what}: {reply.body[:300]!r}"
    body = reply.json()
    assert body["error"] == code, reply.what
    assert body["detail"].strip(), f"{reply.what}: empty detail"
    return dict(body)


def poll(check: Callable[[], bool], timeout: float = 5.0, interval: float = 0.02) -> bool:
    """Re-run `check` until it is true; bounded in time and count."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if check():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return check()


def world_numbers(db: Any, ids: list[int]) -> dict[int, int]:
    with db.cursor() as cur:
        cur.execute("SELECT id, randomnumber FROM world WHERE id = ANY(%s)", (ids,))
        return dict(cur.fetchall())


def orders_with_key(db: Any, key: str) -> list[tuple[Any, ...]]:
    with db.cursor() as cur:
        cur.execute("SELECT id, item, qty FROM orders WHERE idempotency_key = %s", (key,))
        return list(cur.fetchall())


def orders_of_item(db: Any, item: str) -> int:
    """How many orders carry `item` (items are unique per test run; the database may be shared)."""
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM orders WHERE item = %s", (item,))
        return int(cur.fetchone()[0])


def assert_world(row: Any) -> None:
    assert isinstance(row, dict) and set(row) == {"id", "randomNumber"}, row
    for key in ("id", "randomNumber"):
        value = row[key]
        assert type(value) is int and 1 <= value <= contract.WORLD_ROWS, row


# --- benchmark endpoints ------------------------------------------------------------------


def test_json_byte_for_byte(client: Client) -> None:
    reply = client.get("/json")
    assert reply.status == 200
    assert reply.body == b'{"message":"Hello, World!"}' == contract.JSON_BODY


def test_plaintext_byte_for_byte(client: Client) -> None:
    reply = client.get("/plaintext")
    assert reply.status == 200
    assert reply.body == b"Hello, World!" == contract.HELLO


def test_head_json_has_headers_and_no_body(client: Client) -> None:
    with client.connection() as conn:
        head = client.request("HEAD", "/json", conn=conn)
        # A body after HEAD would garble this second answer on the same connection.
        get = client.request("GET", "/json", conn=conn)
    assert head.status == 200 and head.body == b""
    assert head.header("Content-Length") == str(len(contract.JSON_BODY))
    assert head.content_type == get.content_type
    assert get.body == contract.JSON_BODY


def test_keep_alive_serves_several_requests_on_one_connection(client: Client) -> None:
    with client.connection() as conn:
        conn.connect()
        sock = conn.sock
        for target in ("/json", "/plaintext", "/db", "/queries?queries=3", "/fortunes", "/json"):
            reply = client.request("GET", target, conn=conn)
            assert reply.status == 200, reply.what
            assert (reply.header("Connection") or "").lower() != "close", reply.what
            assert conn.sock is sock, f"{reply.what}: the server closed the connection"


def test_db_returns_one_world_row(client: Client) -> None:
    for _ in range(5):
        reply = client.get("/db")
        assert reply.status == 200
        assert_world(reply.json())


QUERIES_CASES = [
    # (query string, rows expected): missing, non-integer or < 1 counts as 1; above 500 as 500.
    (None, 1), ("abc", 1), ("", 1), ("0", 1), ("-5", 1), ("1", 1), ("20", 20), ("501", 500),
    ("99999", 500),
]
QUERIES_IDS = ["missing" if raw is None else f"q={raw}" for raw, _ in QUERIES_CASES]


def queries_target(path: str, raw: str | None) -> str:
    return path if raw is None else f"{path}?queries={quote(raw)}"


@pytest.mark.parametrize(("raw", "rows"), QUERIES_CASES, ids=QUERIES_IDS)
def test_queries_clamps_the_count(client: Client, raw: str | None, rows: int) -> None:
    assert contract.clamp_queries(raw) == rows  # the test table agrees with the contract
    reply = client.get(queries_target("/queries", raw))
    assert reply.status == 200
    body = reply.json()
    assert isinstance(body, list) and len(body) == rows, reply.what
    for row in body:
        assert_world(row)


@pytest.mark.parametrize(("raw", "rows"), QUERIES_CASES, ids=QUERIES_IDS)
def test_updates_clamps_commits_and_reads_back(
    client: Client, db: Any, raw: str | None, rows: int
) -> None:
    reply = client.get(queries_target("/updates", raw))
    assert reply.status == 200
    body = reply.json()
    assert isinstance(body, list) and len(body) == rows, reply.what
    for row in body:
        assert_world(row)
    returned = {row["id"]: row["randomNumber"] for row in body}
    assert len(returned) == rows, f"{reply.what}: ids repeat, each row must be updated once"
    # Committed before the response: the database holds exactly the values shown.
    assert world_numbers(db, list(returned)) == returned


FORTUNE_ROW = re.compile(r"<tr><td>(-?\d+)</td><td>(.*?)</td></tr>", re.DOTALL)


def test_fortunes_sorted_escaped_and_utf8(client: Client, db: Any) -> None:
    reply = client.get("/fortunes")
    assert reply.status == 200
    assert reply.content_type == "text/html; charset=utf-8"
    with db.cursor() as cur:
        cur.execute(contract.pyformat(contract.SQL_FORTUNES))
        expected = contract.fortunes_reply(cur.fetchall()).body
    assert reply.body == expected  # byte for byte what the contract renders from the table
    text = reply.text
    rows = [(int(fid), html.unescape(message)) for fid, message in FORTUNE_ROW.findall(text)]
    assert len(rows) == 13, rows
    messages = [message for _, message in rows]
    assert messages == sorted(messages)
    assert contract.EXTRA_FORTUNE in rows
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert '<script>alert("This should not be displayed in a browser alert box.");</script>' in (
        messages
    )
    assert "フレームワークのベンチマーク".encode() in reply.body


# --- lab endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "waited"), [("/io", 10), ("/io?ms=0", 0), ("/io?ms=100", 100)])
def test_io_waits(client: Client, target: str, waited: int) -> None:
    started = time.monotonic()
    reply = client.get(target)
    elapsed = time.monotonic() - started
    assert reply.status == 200
    assert reply.body == contract.io_reply(waited).body
    assert elapsed >= waited / 1000 * 0.9, f"{reply.what}: answered after {elapsed:.3f} s"


@pytest.mark.parametrize("n", [None, 1, 12_345, 250_000])
def test_cpu_is_deterministic(client: Client, n: int | None) -> None:
    reply = client.get("/cpu" if n is None else f"/cpu?n={n}")
    size = contract.CPU_N[0] if n is None else n
    assert reply.status == 200
    assert reply.json() == {"n": size, "result": contract.cpu_work(size)}
    assert reply.body == contract.cpu_reply(size).body


@pytest.mark.parametrize(("target", "held"), [("/hold", 10), ("/hold?ms=0", 0), ("/hold?ms=100", 100)])
def test_hold_holds(client: Client, target: str, held: int) -> None:
    started = time.monotonic()
    reply = client.get(target)
    elapsed = time.monotonic() - started
    assert reply.status == 200
    assert reply.body == contract.hold_reply(held).body
    assert elapsed >= held / 1000 * 0.9, f"{reply.what}: answered after {elapsed:.3f} s"


LAB_PARAMS = {"io": ("ms", contract.IO_MS), "cpu": ("n", contract.CPU_N), "hold": ("ms", contract.HOLD_MS)}
BAD_VALUES = ["abc", "-1", "too_large", "1.5", "", "1e3", "0x10", "5 5"]


@pytest.mark.parametrize("value", BAD_VALUES)
@pytest.mark.parametrize("endpoint", sorted(LAB_PARAMS))
def test_bad_lab_parameter_is_400(client: Client, endpoint: str, value: str) -> None:
    name, limits = LAB_PARAMS[endpoint]
    raw = str(limits[2] + 1) if value == "too_large" else value
    reply = client.get(f"/{endpoint}?{name}={quote(raw)}")
    assert_error(reply, 400, "bad_request")
    assert reply.body == contract_refusal(lambda: contract.int_param(name, raw, limits)).body


def test_cpu_below_one_is_400(client: Client) -> None:
    assert_error(client.get("/cpu?n=0"), 400, "bad_request")


# --- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["/", "/nope", "/json/", "/JSON", "/orders/1/items", "/nope?queries=2", "/openapi"]
)
def test_unknown_path_is_404_json(client: Client, target: str) -> None:
    reply = client.get(target)
    assert_error(reply, 404, "not_found")
    path = urlsplit(target).path
    assert reply.body == contract_refusal(lambda: contract.route("GET", path)).body


MALFORMED_HTTP = {
    "request line": b"GARBAGE\r\n\r\n",
    "no host": b"GET /json HTTP/1.1\r\n\r\n",
    "two hosts": b"GET /json HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bare LF": b"GET /json HTTP/1.1\nHost: lab\n\n",
    "obs-fold": b"GET /json HTTP/1.1\r\nHost: lab\r\nX-A: a\r\n b\r\n\r\n",
    "CL and TE": b"POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "unknown method": b"BREW /json HTTP/1.1\r\nHost: lab\r\n\r\n",
    "HTTP/2.0": b"GET /json HTTP/2.0\r\nHost: lab\r\n\r\n",
    "non-ASCII target": b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: lab\r\n\r\n",
    "long request line": b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: lab\r\n\r\n",
    "method": b"G(E)T /json HTTP/1.1\r\nHost: lab\r\n\r\n",
    "header line": b"GET /json HTTP/1.1\r\nHost: lab\r\nno colon here\r\n\r\n",
    "content length": b"POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Length: ten\r\n\r\n",
    "chunk size": b"POST /orders HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


@pytest.mark.parametrize("case", list(MALFORMED_HTTP))
def test_malformed_http_is_400_json_then_close(server: ServerProcess, case: str) -> None:
    """HTTP no parser accepts gets the same JSON 400 as bad parameters (not the HTTP library's own
    page), and the connection closes, since nothing after it can be framed."""
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(MALFORMED_HTTP[case])
        response = http.client.HTTPResponse(sock)
        response.begin()
        reply = Reply("RAW", "/", response.status, tuple(response.getheaders()), response.read())
        check_common(server.model, reply)
        body = assert_error(reply, 400, "bad_request")
        assert "HTTP/1.1" in body["detail"], body  # says what to do next
        sock.settimeout(5.0)
        assert sock.recv(1) == b"", f"{case}: connection left open after a malformed request"


@pytest.mark.parametrize(
    ("method", "target"),
    [("POST", "/json"), ("PUT", "/db"), ("DELETE", "/orders/1"), ("GET", "/orders"),
     ("PATCH", "/health"), ("OPTIONS", "/plaintext"), ("HEAD", "/orders")],
)
def test_wrong_method_is_405_with_allow(client: Client, method: str, target: str) -> None:
    reply = client.request(method, target)
    expected = contract_refusal(lambda: contract.route(method, target))
    assert reply.status == 405, reply.what
    assert reply.header("Allow") == dict(expected.headers)["Allow"]
    if method != "HEAD":
        assert_error(reply, 405, "method_not_allowed")
        assert reply.body == expected.body


def test_body_over_64_kib_is_413_json(client: Client, db: Any) -> None:
    item = new_item()
    too_big = json.dumps({"item": item, "qty": 1, "pad": "x" * MAX}).encode()
    reply = client.post("/orders", too_big)
    assert_error(reply, 413, "payload_too_large")
    assert reply.body == contract.too_large(len(too_big)).body
    # Exactly 64 KiB is not too large: a valid JSON body of that size gets the usual checks.
    padding = MAX - len(json.dumps({"item": "", "qty": 1}))
    body = json.dumps({"item": "x" * padding, "qty": 1}).encode()
    assert len(body) == MAX
    assert_error(client.post("/orders", body), 400, "bad_request")
    assert orders_of_item(db, item) == 0


def test_expect_100_continue_invites_a_body_only_when_it_will_be_read(server: ServerProcess, db: Any) -> None:
    """`Expect: 100-continue`: a body within the limit is invited (100 Continue) and the order made;
    one over the limit gets its 413 without an invitation."""
    item = new_item()
    body = json.dumps({"item": item, "qty": 2}).encode()
    head = (f"POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
            f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(head)
        interim = b""
        while not interim.endswith(b"\r\n\r\n") and len(interim) < 200:
            chunk = sock.recv(1)
            assert chunk, f"closed before inviting the body; got {interim!r}"
            interim += chunk
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 201, response.read()
        response.read()
    assert orders_of_item(db, item) == 1
    big = (f"POST /orders HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\n"
           f"Expect: 100-continue\r\nContent-Length: {MAX + 1}\r\n\r\n").encode()
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT) as sock:
        sock.sendall(big)
        line = b""
        while not line.endswith(b"\r\n") and len(line) < 200:  # read raw: http.client skips a 100
            chunk = sock.recv(1)
            assert chunk, f"closed before answering; got {line!r}"
            line += chunk
        assert line.startswith(b"HTTP/1.1 413 "), line


# --- orders -------------------------------------------------------------------------------


def new_item() -> str:
    return f"book ☕ {uuid.uuid4()}"


def test_order_is_created_and_read_back(client: Client, db: Any) -> None:
    item = new_item()
    created = client.post_json("/orders", {"item": item, "qty": 3})
    assert created.status == 201, created.what
    order = created.json()
    assert order == {"id": order["id"], "item": item, "qty": 3}
    assert created.header("Location") == f"/orders/{order['id']}"
    assert created.header("Idempotent-Replayed") is None
    with db.cursor() as cur:  # committed before the 201
        cur.execute("SELECT item, qty, idempotency_key FROM orders WHERE id = %s", (order["id"],))
        assert cur.fetchall() == [(item, 3, None)]
    read = client.get(created.header("Location") or "")
    assert read.status == 200
    assert read.body == created.body


def test_orders_without_key_are_separate(client: Client) -> None:
    item = new_item()
    first = client.post_json("/orders", {"item": item, "qty": 1})
    second = client.post_json("/orders", {"item": item, "qty": 1})
    assert (first.status, second.status) == (201, 201)
    assert first.json()["id"] != second.json()["id"]


RUN_ITEM = f"book {uuid.uuid4()}"  # the item of every malformed order: none may be stored
BAD_ORDERS: dict[str, bytes] = {
    "not_json": b"not json",
    "empty_body": b"",
    "array": b'[{"item": "book", "qty": 1}]',
    "null": b"null",
    "missing_item": b'{"qty": 1}',
    "missing_qty": b'{"item": "book"}',
    "empty_item": b'{"item": "", "qty": 1}',
    "blank_item": b'{"item": "   ", "qty": 1}',
    "item_number": b'{"item": 5, "qty": 1}',
    "nul_in_item": b'{"item": "a\\u0000b", "qty": 1}',
    "huge_item": json.dumps({"item": "x" * (contract.ITEM_MAX_CHARS + 1), "qty": 1}).encode(),
    "qty_zero": b'{"item": "book", "qty": 0}',
    "qty_negative": b'{"item": "book", "qty": -3}',
    "qty_string": b'{"item": "book", "qty": "2"}',
    "qty_true": b'{"item": "book", "qty": true}',
    "qty_float": b'{"item": "book", "qty": 2.5}',
    "qty_too_big": json.dumps({"item": "book", "qty": contract.QTY_MAX + 1}).encode(),
    "unknown_field": b'{"item": "book", "qty": 1, "price": 3}',
    "bad_utf8": b'{"item": "\xff", "qty": 1}',
    "nested_60k": b"[" * 60_000,
    "nested_objects": b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
    "lone_surrogate": b'{"item": "a\\ud800b", "qty": 1}',
    "nan_qty": b'{"item": "book", "qty": NaN}',
}


@pytest.mark.parametrize("name", sorted(BAD_ORDERS))
def test_malformed_order_is_400(client: Client, db: Any, name: str) -> None:
    body = BAD_ORDERS[name].replace(b'"book"', json.dumps(RUN_ITEM).encode())
    reply = client.post("/orders", body)
    assert_error(reply, 400, "bad_request")
    assert reply.body == contract_refusal(lambda: contract.parse_order(body)).body
    assert orders_of_item(db, RUN_ITEM) == 0


@pytest.mark.parametrize(
    "key", ["has space", "x" * 201, "", "caf\u00e9"], ids=["space", "long", "empty", "latin1"]
)
def test_bad_idempotency_key_is_400(client: Client, db: Any, key: str) -> None:
    item = new_item()
    reply = client.post_json("/orders", {"item": item, "qty": 1}, {"Idempotency-Key": key})
    assert_error(reply, 400, "bad_request")
    assert orders_of_item(db, item) == 0


@pytest.mark.parametrize(
    "ctype", [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx"])
def test_order_that_is_not_json_by_type_is_415(client: Client, db: Any, ctype: str | None) -> None:
    item = new_item()
    headers = {"Content-Type": ctype} if ctype else {}
    body = json.dumps({"item": item, "qty": 1}).encode()
    reply = client.request("POST", "/orders", body=body, headers=headers)
    error = assert_error(reply, 415, "unsupported_media_type")
    assert "application/json" in error["detail"]
    assert orders_of_item(db, item) == 0
    assert client.post_json("/orders", {"item": item, "qty": 1}).status == 201  # charset and all: fine


def test_idempotency_key_replays_the_first_order(client: Client, db: Any) -> None:
    key = f"test-{uuid.uuid4()}"
    payload = {"item": new_item(), "qty": 2}
    first = client.post_json("/orders", payload, {"Idempotency-Key": key})
    assert first.status == 201, first.what
    again = client.post_json("/orders", payload, {"Idempotency-Key": key})
    assert again.status == 200, again.what
    assert again.header("Idempotent-Replayed") == "true"
    assert again.body == first.body
    # Same key, another order: 422 (the IETF Idempotency-Key draft's answer), never a second row.
    other = client.post_json("/orders", {"item": new_item(), "qty": 9}, {"Idempotency-Key": key})
    body = assert_error(other, 422, "idempotency_key_reused")
    assert str(first.json()["id"]) in body["detail"]
    order = first.json()
    assert orders_with_key(db, key) == [(order["id"], payload["item"], 2)]


def test_concurrent_requests_with_one_key_make_one_order(client: Client, db: Any) -> None:
    key = f"test-{uuid.uuid4()}"
    payload = {"item": new_item(), "qty": 1}
    threads = 8
    barrier = threading.Barrier(threads, timeout=TIMEOUT)
    replies: list[Reply] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def post() -> None:
        try:
            barrier.wait()
            reply = client.post_json("/orders", payload, {"Idempotency-Key": key})
            with lock:
                replies.append(reply)
        except BaseException as exc:  # surfaced below, with the others
            with lock:
                failures.append(exc)

    workers = [threading.Thread(target=post) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(TIMEOUT * 2)
    assert not failures, failures
    assert len(replies) == threads
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * (threads - 1) + [201], statuses
    assert len({r.body for r in replies}) == 1
    assert len(orders_with_key(db, key)) == 1


def test_missing_order_is_404(client: Client) -> None:
    order_id = 999_999_999_999_999_999
    reply = client.get(f"/orders/{order_id}")
    assert_error(reply, 404, "not_found")
    assert reply.body == contract.order_reply(None, order_id).body


@pytest.mark.parametrize("raw", ["abc", "0", "-1", "1.5", "1e3", "9" * 19, ""])
def test_malformed_order_id_is_400(client: Client, raw: str) -> None:
    reply = client.get(f"/orders/{raw}")
    assert_error(reply, 400, "bad_request")
    assert reply.body == contract_refusal(lambda: contract.parse_order_id(raw)).body


# --- operations ---------------------------------------------------------------------------


def test_health(client: Client) -> None:
    reply = client.get("/health")
    assert reply.status == 200
    assert reply.body == contract.health_reply().body


def test_ready(client: Client) -> None:
    reply = client.get("/ready")
    assert reply.status == 200
    assert reply.body == contract.ready_reply().body


@pytest.mark.parametrize("model", MODELS)
def test_health_is_alive_and_ready_says_the_database_is_not(
    server_factory: Any, database_url: str, model: str
) -> None:
    """Liveness and readiness are separate answers: a lost database makes /ready say 503 within
    its own timeout, while /health still answers 200 (the process is fine)."""
    from lab.faults.proxy import FaultProxy  # the lab's own TCP proxy between server and database

    with FaultProxy.to_url(database_url) as proxy, started(
        server_factory, model, env={"LAB_READY_TIMEOUT": "0.5"},
        args=["--database-url", proxy.url_for(database_url)],
    ) as proc:
        client = Client(proc)
        assert client.get("/ready").status == 200
        proxy.blackhole()
        began = time.monotonic()
        reply = client.get("/ready")
        waited = time.monotonic() - began
        assert_error(reply, 503, "unhealthy")
        assert waited < 1.5, f"/ready took {waited:.2f} s with a 0.5 s timeout"
        assert client.get("/health").status == 200
        proxy.heal()
        assert poll(lambda: client.get("/ready").status == 200, timeout=10.0)


def test_config_names_the_model_and_hides_secrets(
    client: Client, server: ServerProcess, database_url: str
) -> None:
    config = client.get("/config").json()
    assert config["model"] == server.model
    assert config["port"] == server.port
    if server.model != "multiproc":
        assert config["workers"] == 1
        if server.pid:  # 0 for a Compose container: its pid is the container's own
            assert config["pid"] == server.pid  # one process serves: the one that was started
    assert not [k for k in config if "password" in k.lower() or "secret" in k.lower()]
    assert urlsplit(config["database_url"]).password in (None, "***")
    password = urlsplit(database_url).password
    if password:
        assert password not in json.dumps(config)


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    user = parts.username or "serverlab"
    host = parts.hostname or "127.0.0.1"
    netloc = f"{user}:{password}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def started(server_factory: Any, model: str, **kwargs: Any) -> Iterator[ServerProcess]:
    """server_factory's server, whether the factory returns it or a context manager for it."""
    made = server_factory(model, **kwargs)
    if hasattr(made, "__enter__"):
        with made as proc:
            yield proc
    else:
        yield made


@pytest.mark.parametrize("model", MODELS)
def test_config_redacts_the_database_password(
    server_factory: Any, database_url: str, model: str
) -> None:
    # The test database may trust local connections, in which case a made-up password is unused.
    password = urlsplit(database_url).password or f"pw-{uuid.uuid4().hex}"
    url = with_password(database_url, password)
    with started(server_factory, model, args=["--database-url", url]) as proc:
        reply = Client(proc).get("/config")
    assert password not in reply.text
    assert urlsplit(reply.json()["database_url"]).password == "***"


def metrics_text(client: Client) -> str:
    reply = client.get("/metrics")
    assert reply.status == 200
    return reply.text


def test_metrics_exposes_counters_and_gauges(client: Client) -> None:
    config = client.get("/config").json()
    text = metrics_text(client)
    for family in ("requests_total", "request_duration_seconds", "rejections_total",
                   "inflight_requests", "open_connections", "pool_size", "pool_in_use",
                   "pool_waiting", "processes"):
        assert f"# TYPE serverlab_{family} " in text, family
    assert metric_value(text, "serverlab_info", {"model": client.model, "metrics": "1"}) == 1
    assert metric_value(text, "serverlab_pool_size") == config["pool_size"] * config["workers"]
    assert metric_value(text, "serverlab_processes") == config["workers"]
    for reason in ("pool_timeout", "inflight_timeout", "connection_limit"):
        assert metric_value(text, "serverlab_rejections_total", {"reason": reason}) is not None


@pytest.mark.parametrize(
    ("target", "endpoint", "status"),
    [("/json", "/json", 200), ("/nope", "unmatched", 404), ("/orders/abc", "/orders/{id}", 400)],
)
def test_metrics_count_a_request_just_made(
    client: Client, target: str, endpoint: str, status: int
) -> None:
    labels = {"endpoint": endpoint, "status": str(status)}

    def count() -> float:
        return metric_value(metrics_text(client), "serverlab_requests_total", labels) or 0.0

    def counted_and_timed() -> bool:
        # One scrape for both: multiproc's workers may each serve one, with peers' files 0.5 s old.
        text = metrics_text(client)
        total = metric_value(text, "serverlab_requests_total", labels) or 0.0
        timed = metric_value(text, "serverlab_request_duration_seconds_count", {"endpoint": endpoint})
        return total >= before + 1 and timed is not None and timed >= 1

    before = count()
    assert client.get(target).status == status
    # multiproc merges its workers' counts; allow it a moment, bounded.
    assert poll(counted_and_timed), f"{labels} stayed at {count()} (was {before}) or has no histogram"


def test_metrics_report_the_process_tree(client: Client, server: ServerProcess,
                                         request: pytest.FixtureRequest) -> None:
    """process_* on /metrics is the server's whole tree (multiproc: supervisor and workers) as the
    OS sees it from outside: the figures a lab on another host takes its headline costs from."""
    if compose_mode(request.config):
        pytest.skip("compose mode: the servers' processes are in containers, not visible here")
    root = psutil.Process(server.pid)

    def tree() -> list[psutil.Process]:
        return [root, *root.children(recursive=True)]

    def ticks() -> float:
        return sum(sum(p.cpu_times()[:2]) for p in tree())

    config = client.get("/config").json()
    before = ticks()
    text = metrics_text(client)
    after = ticks()
    procs = tree()
    assert metric_value(text, "serverlab_process_tree_processes") == len(procs)
    assert len(procs) == (config["workers"] + 1 if client.model == "multiproc" else 1)
    # /proc's ticks are 10 ms per process and field: the fine clock lies within that of them.
    slack = 0.021 * len(procs)
    cpu = metric_value(text, "process_cpu_seconds_total")
    assert cpu is not None and before - slack <= cpu <= after + slack
    rss = metric_value(text, "process_resident_memory_bytes")
    assert rss is not None and abs(rss - sum(p.memory_info().rss for p in procs)) < 0.05 * rss
    threads = metric_value(text, "process_threads")
    assert threads is not None and abs(threads - sum(p.num_threads() for p in procs)) <= 2
    fds = metric_value(text, "process_open_fds")
    assert fds is not None and abs(fds - sum(p.num_fds() for p in procs)) <= 4 * len(procs)
    assert metric_value(text, "process_start_time_seconds") == pytest.approx(root.create_time(), abs=0.05)


# --- backpressure -------------------------------------------------------------------------


def wait_for_active_query(db: Any, application_name: str, prefix: str) -> bool:
    def active() -> bool:
        with db.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE application_name = %s AND state = 'active' AND query LIKE %s",
                (application_name, prefix + "%"),
            )
            return bool(cur.fetchone()[0])

    return poll(active, timeout=TIMEOUT)


@pytest.mark.parametrize("model", MODELS)
def test_exhausted_pool_gives_a_prompt_503(server_factory: Any, db: Any, model: str) -> None:
    env = {"LAB_POOL_SIZE": "1", "LAB_ACQUIRE_TIMEOUT": "0.3", "LAB_WORKERS": "1"}
    with started(server_factory, model, env=env) as proc:
        client = Client(proc)
        reason = {"reason": "pool_timeout"}
        rejected_before = metric_value(metrics_text(client), "serverlab_rejections_total", reason)
        assert rejected_before is not None
        first: list[Reply] = []
        first_done = threading.Event()

        def hold() -> None:
            try:
                first.append(client.get("/hold?ms=1500"))
            finally:
                first_done.set()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            # The one pooled connection is busy once PostgreSQL runs the sleep.
            assert wait_for_active_query(db, contract.server_header(model), "SELECT pg_sleep")
            second = client.get("/hold?ms=10")
            assert not first_done.is_set(), "the 503 must come before the held connection frees"
        finally:
            holder.join(TIMEOUT)
        assert_error(second, 503, "overloaded")
        assert second.header("Retry-After") == contract.RETRY_AFTER_SECONDS
        assert [r.status for r in first] == [200]
        assert first[0].body == contract.hold_reply(1500).body

        def rejected() -> float:
            return metric_value(metrics_text(client), "serverlab_rejections_total", reason) or 0.0

        assert poll(lambda: rejected() >= rejected_before + 1)
        assert rejected() == rejected_before + 1
        # The wait that gave up leaked nothing: the one connection serves again, and is returned.
        for _ in range(3):
            assert client.get("/db").status == 200
        assert poll(lambda: metric_value(metrics_text(client), "serverlab_pool_in_use", {}) == 0)


@pytest.mark.parametrize("model", MODELS)
def test_no_free_in_flight_slot_gives_a_prompt_503(server_factory: Any, model: str) -> None:
    env = {"LAB_MAX_INFLIGHT": "1", "LAB_ACQUIRE_TIMEOUT": "0.3", "LAB_WORKERS": "1"}
    with started(server_factory, model, env=env) as proc:
        client = Client(proc)
        reason = {"reason": "inflight_timeout"}

        def rejected() -> float:
            return metric_value(metrics_text(client), "serverlab_rejections_total", reason) or 0.0

        rejected_before = rejected()
        first: list[Reply] = []
        first_done = threading.Event()

        def hold() -> None:
            try:
                first.append(client.get("/io?ms=1500"))  # no database: only the slot is held
            finally:
                first_done.set()

        holder = threading.Thread(target=hold)
        holder.start()
        try:
            inflight = lambda: metric_value(metrics_text(client), "serverlab_inflight_requests", {})  # noqa: E731
            assert poll(lambda: inflight() == 1), "the held request never showed as in flight"
            began = time.monotonic()
            second = client.get("/json")
            waited = time.monotonic() - began
            assert not first_done.is_set(), "the 503 must come before the slot frees"
        finally:
            holder.join(TIMEOUT)
        assert_error(second, 503, "overloaded")
        assert second.header("Retry-After") == contract.RETRY_AFTER_SECONDS
        assert waited >= 0.25, f"answered after {waited:.2f} s: it did not wait for a slot"
        assert [r.status for r in first] == [200]
        assert poll(lambda: rejected() == rejected_before + 1)
        assert client.get("/json").status == 200  # the slot came back


# --- the four behave the same -------------------------------------------------------------

# Requests whose whole answer is deterministic: status, body and headers must match across the
# four servers, except `Server` (names the model, by design) and `Date` (time passes).
SAME_EVERYWHERE: list[tuple[str, str, bytes | None]] = [
    ("GET", "/json", None), ("HEAD", "/json", None), ("GET", "/plaintext", None),
    ("GET", "/fortunes", None), ("GET", "/cpu?n=777", None), ("GET", "/io?ms=0", None),
    ("GET", "/hold?ms=0", None), ("GET", "/health", None), ("GET", "/ready", None),
    ("GET", "/io?ms=abc", None), ("GET", "/cpu?n=0", None), ("GET", "/hold?ms=10001", None),
    ("GET", "/nope", None), ("POST", "/json", b""), ("GET", "/orders", None),
    ("GET", "/orders/abc", None), ("GET", "/orders/999999999999999999", None),
    ("POST", "/orders", b"[]"), ("POST", "/orders", b'{"item": "a", "qty": "2"}'),
    ("POST", "/orders", b"{" * (MAX + 1)),
]
# Requests whose body varies (random rows, ports): status, content type and shape must match.
SAME_SHAPE = ["/db", "/queries?queries=3", "/updates?queries=2", "/config", "/metrics"]
VARIES = {"server", "date"}


def shape(reply: Reply) -> object:
    if reply.content_type.startswith("application/json"):
        body = reply.json()
        if isinstance(body, list):
            return ("list", len(body), sorted({k for row in body for k in row}))
        return ("object", sorted(body))
    return reply.content_type


def assert_same(answers: dict[str, dict[str, object]]) -> None:
    """Fail, listing every request whose answers differ, with the models grouped by answer."""
    problems = []
    for request, by_model in answers.items():
        groups: dict[str, list[str]] = {}
        for model, answer in by_model.items():
            groups.setdefault(repr(answer), []).append(model)
        if len(groups) > 1:
            lines = "\n".join(f"    {', '.join(models)}: {answer}" for answer, models in groups.items())
            problems.append(f"  {request}:\n{lines}")
    if problems:
        pytest.fail("answers differ between servers:\n" + "\n".join(problems), pytrace=False)


def test_same_answers_on_all_four(servers: dict[str, ServerProcess]) -> None:
    clients = {model: Client(proc) for model, proc in servers.items()}
    answers: dict[str, dict[str, object]] = {}
    for method, target, body in SAME_EVERYWHERE:
        request = f"{method} {target[:40]}" + (f" ({len(body)} byte body)" if body else "")
        answers[request] = {}
        for model, client in clients.items():
            reply = client.request(method, target, body=body)
            headers = sorted((k.lower(), v) for k, v in reply.headers if k.lower() not in VARIES)
            answers[request][model] = (reply.status, headers, reply.body[:300])
    for target in SAME_SHAPE:
        answers[f"GET {target}"] = {}
        for model, client in clients.items():
            reply = client.get(target)
            names = sorted(k.lower() for k, _ in reply.headers)
            answers[f"GET {target}"][model] = (reply.status, reply.content_type, names, shape(reply))
    assert_same(answers)
