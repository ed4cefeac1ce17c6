"""POST /orders whose database session PostgreSQL ends mid-statement, on each of the four servers as a
real process: without an Idempotency-Key the 503 says to send it again with one; with a key the server
retries on a new session itself, and a second loss says to send it again with the same key."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lab.faults import wire
from lab.stack import database
from tests.conftest import MODELS, ServerFactory

pytestmark = pytest.mark.integration


@contextmanager
def orders_locked(database_url: str) -> Iterator[None]:
    """Every INSERT into orders waits (on its own session) until the block ends."""
    conn = database.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE orders IN EXCLUSIVE MODE")  # reads go on; writes wait
        yield
    finally:
        conn.close()  # ends the transaction, and the lock with it


def end_waiting_insert(db: Any, app: str, not_pid: int = 0) -> int:
    """pg_terminate_backend on the server's session whose INSERT waits for the lock; its pid."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with db.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = "
                        "'Lock' AND query LIKE 'INSERT INTO orders%%' AND pid <> %s", (app, not_pid))
            row = cur.fetchone()
            if row is not None:
                cur.execute("SELECT pg_terminate_backend(%s)", (row[0],))
                assert cur.fetchone()[0], row
                return int(row[0])
        time.sleep(0.02)
    raise AssertionError(f"no INSERT of {app} waited for the lock within 10 s")


class Sent:
    """POST /orders in a thread: its answer once `answer()` is called."""

    def __init__(self, url: str, item: str, key: str | None) -> None:
        headers = {"Content-Type": "application/json", **({"Idempotency-Key": key} if key else {})}
        body = json.dumps({"item": item, "qty": 1}).encode()
        self.got: list[wire.Answer] = []
        self.thread = threading.Thread(target=lambda: self.got.append(
            wire.request(url, "POST", "/orders", body, headers, timeout=20.0)))
        self.thread.start()

    def answer(self) -> wire.Answer:
        self.thread.join(25)
        assert self.got, "no answer within 25 s"
        return self.got[0]


def orders_of(db: Any, item: str) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM orders WHERE item = %s", (item,))
        return int(cur.fetchone()[0])


def lost_detail(answer: wire.Answer) -> str:
    assert answer.status == 503 and "retry-after" in answer.headers, answer
    doc = json.loads(answer.body)
    assert doc["error"] == "unhealthy", doc
    return str(doc["detail"])


@pytest.mark.parametrize("model", MODELS)
def test_an_order_whose_session_is_lost_says_how_to_send_it_again(
        model: str, server_factory: ServerFactory, db: Any, database_url: str) -> None:
    app = f"lost-order-{model}"
    server = server_factory(model, env={"LAB_APP_NAME": app})
    item = f"lost {uuid.uuid4()}"

    with orders_locked(database_url):  # no key: the server must not retry, and says what to do
        sent = Sent(server.url, item, None)
        end_waiting_insert(db, app)
        detail = lost_detail(sent.answer())
    assert "send it again with an Idempotency-Key" in detail and "twice" in detail, detail
    assert orders_of(db, item) == 0  # not placed: the 503 was not a lie

    key = f"lost-{uuid.uuid4()}"
    with orders_locked(database_url):  # with a key: lost twice, then the same key once more
        sent = Sent(server.url, item, key)
        first = end_waiting_insert(db, app)
        end_waiting_insert(db, app, not_pid=first)  # the server's own retry, on a new session
        detail = lost_detail(sent.answer())
    assert "send it again with the same Idempotency-Key" in detail, detail

    with orders_locked(database_url):  # lost once: the server retries itself, and the order is placed
        sent = Sent(server.url, item, key)
        end_waiting_insert(db, app)
        time.sleep(0.3)  # the retry waits on the lock too; then the lock goes
    answer = sent.answer()
    assert answer.status == 201, answer
    assert orders_of(db, item) == 1
