"""openapi.yaml is a valid OpenAPI 3.1 document and cannot drift from servers/contract.py."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename

from servers import contract
from servers.settings import DEFAULT_PORTS, MODELS, Settings
from tests.contract_client import OPENAPI_PATH, openapi, openapi_document

pytestmark = pytest.mark.unit

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def operations(doc: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """operationId -> (path, METHOD, operation)."""
    found = {}
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in HTTP_METHODS:
                found[op["operationId"]] = (path, method.upper(), op)
    return found


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def query_schema(doc: dict[str, Any], operation_id: str, name: str) -> dict[str, Any]:
    op = operations(doc)[operation_id][2]
    for param in op.get("parameters", []):
        param = resolve(doc, param)
        if param["name"] == name:
            return dict(param["schema"])
    raise AssertionError(f"{operation_id} documents no parameter {name}")


def test_document_is_valid_openapi_31() -> None:
    spec, _ = read_from_filename(str(OPENAPI_PATH))
    validate(spec)
    assert str(spec["openapi"]).startswith("3.1")
    openapi()  # openapi-core accepts it too


def test_every_route_with_exactly_its_methods() -> None:
    doc = openapi_document()
    documented = {
        path: {m.upper() for m in item if m in HTTP_METHODS} for path, item in doc["paths"].items()
    }
    expected = {path: set(methods) for path, methods in contract.ROUTES.values()}
    assert documented == expected


def test_operation_ids_are_the_contract_route_names() -> None:
    ops = operations(openapi_document())
    assert {name: (path, method) for name, (path, method, _) in ops.items()} == {
        name: (path, next(iter(methods))) for name, (path, methods) in contract.ROUTES.items()
    }


def test_servers_are_the_four_models_on_default_ports() -> None:
    servers = openapi_document()["servers"]
    assert [s["url"] for s in servers] == [f"http://127.0.0.1:{DEFAULT_PORTS[m]}" for m in MODELS]
    for server, model in zip(servers, MODELS, strict=True):
        assert server["description"].startswith(f"{model}:")


def test_lab_parameter_limits_match_the_contract() -> None:
    doc = openapi_document()
    for operation_id, name, limits in (
        ("io", "ms", contract.IO_MS),
        ("hold", "ms", contract.HOLD_MS),
        ("cpu", "n", contract.CPU_N),
        ("block", "ms", contract.BLOCK_MS),
    ):
        schema = query_schema(doc, operation_id, name)
        default, low, high = limits
        assert (schema["type"], schema["default"], schema["minimum"], schema["maximum"]) == (
            "integer", default, low, high,
        ), operation_id
    # queries is never an error (TechEmpower clamping), so any string is accepted.
    for operation_id in ("queries", "updates"):
        assert query_schema(doc, operation_id, "queries") == {"type": "string"}


def test_payload_limits_match_the_contract() -> None:
    schemas = openapi_document()["components"]["schemas"]
    assert schemas["Worlds"]["maxItems"] == contract.MAX_QUERIES
    for key in ("id", "randomNumber"):
        assert schemas["World"]["properties"][key]["maximum"] == contract.WORLD_ROWS
    new_order = schemas["NewOrder"]
    assert new_order["properties"]["item"]["maxLength"] == contract.ITEM_MAX_CHARS
    assert new_order["properties"]["qty"]["maximum"] == contract.QTY_MAX
    assert set(schemas["Error"]["required"]) == {"error", "detail"}
    # /config serves the public settings plus the answering process id.
    assert {f.name for f in fields(Settings)} | {"pid"} == set(schemas["Config"]["properties"])
    assert set(schemas["Config"]["required"]) == set(schemas["Config"]["properties"])


def test_idempotency_key_rule_matches_the_contract() -> None:
    param = next(
        p for p in operations(openapi_document())["orders"][2]["parameters"]
        if p["name"] == "Idempotency-Key"
    )
    assert param["schema"]["pattern"] == f"^[\\x21-\\x7e]{{1,{contract.IDEMPOTENCY_KEY_MAX}}}$"
    for good in ("a", "x" * contract.IDEMPOTENCY_KEY_MAX, "order-1:retry~2"):
        assert contract.parse_idempotency_key(good) == good
    for bad in ("", "has space", "x" * (contract.IDEMPOTENCY_KEY_MAX + 1), "caf\u00e9"):
        with pytest.raises(contract.ContractError):
            contract.parse_idempotency_key(bad)


@pytest.mark.parametrize("name", sorted(contract.ROUTES))
def test_responses_declare_headers_errors_and_overload(name: str) -> None:
    doc = openapi_document()
    _, _, op = operations(doc)[name]
    responses = {code: resolve(doc, r) for code, r in op["responses"].items()}
    for code, response in responses.items():
        assert {"Server", "Date", "Content-Length"} <= set(response["headers"]), (name, code)
        if int(code) >= 400:
            assert response["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/Error"
            }, (name, code)
    if name in {"io", "cpu", "hold", "orders", "order", "block"}:
        assert "400" in responses, name  # malformed or out-of-range input
    if name == "orders":
        assert "413" in responses
    # Everything but the unlimited endpoints can be refused with a prompt 503; /ready says 503
    # when the database does not answer.
    if name not in contract.UNLIMITED or name in contract.USES_DB or name == "ready":
        assert "Retry-After" in responses["503"]["headers"], name
    else:
        assert "503" not in responses, name
    assert not any(code.startswith("5") and code != "503" for code in responses), name
