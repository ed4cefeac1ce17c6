"""After a writes scenario: every order Locust saw acknowledged must be in the database."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab.stack import database

WRITE_SCENARIOS = frozenset({"writes", "mixed"})


def read_acks(folder: Path) -> dict[str, int]:
    """Idempotency key -> order id, for every order Locust saw acknowledged."""
    acks: dict[str, int] = {}
    for path in sorted(folder.glob("acks-*.tsv")):
        for line in path.read_text(encoding="utf-8").splitlines():
            key, oid, _status = line.split("\t")
            acks[key] = int(oid)
    return acks


def check_writes(database_url: str, run_tag: str, folder: Path) -> dict[str, Any]:
    """Acknowledged orders against the rows in the database with this run's key prefix."""
    acks = read_acks(folder)
    prefix = f"{run_tag}-"
    conn = database.connect(database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, idempotency_key FROM orders WHERE left(idempotency_key, %s) = %s",
                        (len(prefix), prefix))
            rows = {str(key): int(oid) for oid, key in cur.fetchall()}
    finally:
        conn.close()
    missing = [k for k in acks if k not in rows]
    wrong = [k for k, oid in acks.items() if k in rows and rows[k] != oid]
    unacked = [k for k in rows if k not in acks]
    ok = not missing and not wrong and not unacked
    if ok:
        message = f"{len(acks)} acknowledged orders, {len(rows)} rows: every acknowledged order is stored"
    else:
        message = (f"{len(acks)} acknowledged orders but {len(rows)} rows for run tag {run_tag}: "
                   f"{len(missing)} acknowledged orders LOST, {len(wrong)} with another id, "
                   f"{len(unacked)} rows never acknowledged (e.g. {(missing + wrong + unacked)[:3]})")
    return {"run_tag": run_tag, "acknowledged": len(acks), "rows": len(rows), "missing": len(missing),
            "wrong_id": len(wrong), "unacknowledged_rows": len(unacked), "ok": ok, "message": message}

