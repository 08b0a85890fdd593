"""The API edge: health, readiness, problem details for every error, request ids, metrics, OpenAPI."""

from __future__ import annotations

import httpx

from tests.support import assert_problem


def test_health_and_ready(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "checks": {"postgres": "ok", "redis": "ok"}}


def test_unknown_route_is_a_problem(client: httpx.Client) -> None:
    body = assert_problem(client.get("/v1/this-route-does-not-exist"), 404, "not-found")
    assert body["instance"] == "/v1/this-route-does-not-exist"
    assert body["request_id"]


def test_wrong_method_is_a_problem(client: httpx.Client) -> None:
    assert_problem(client.delete("/health"), 405, "method-not-allowed")


def test_unknown_json_fields_are_rejected(client: httpx.Client) -> None:
    r = client.post("/v1/auth/login", json={"login": "a@example.com", "password": "x" * 10, "admin": True})
    body = assert_problem(r, 400, "invalid-request")
    assert "admin" in body["detail"]


def test_malformed_json_is_a_problem(client: httpx.Client) -> None:
    r = client.post("/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"})
    assert_problem(r, 400, "invalid-request")


def test_wrong_types_are_a_problem(client: httpx.Client) -> None:
    assert_problem(client.post("/v1/auth/login", json={"login": 5, "password": []}), 400, "invalid-request")
    assert_problem(client.post("/v1/auth/login", json=[1, 2]), 400, "invalid-request")


def test_body_size_is_capped(client: httpx.Client) -> None:
    huge = {"login": "a@example.com", "password": "p" * 100, "device_name": "x" * 200_000}
    assert_problem(client.post("/v1/auth/login", json=huge), 413, "body-too-large")


def test_request_id_is_echoed_or_made(client: httpx.Client) -> None:
    given = client.get("/health", headers={"X-Request-ID": "trace-12345678"})
    assert given.headers["x-request-id"] == "trace-12345678"
    made = client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert len(made.headers["x-request-id"]) == 32


def test_metrics_count_requests_by_route_template(client: httpx.Client) -> None:
    client.get("/v1/this-route-does-not-exist")
    text = client.get("/metrics").text
    assert "cw_http_requests_total" in text
    assert 'route="unmatched"' in text
    assert 'route="/health"' in text


def test_every_operation_is_documented(client: httpx.Client) -> None:
    spec = client.get("/schema/openapi.json").json()
    operations = [(m, p, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert len(operations) >= 15
    for method, path, op in operations:
        assert op.get("operationId"), (method, path)
        assert op.get("tags"), (method, path)
        assert op.get("description") or op.get("summary"), (method, path)
    ids = [op["operationId"] for _, _, op in operations]
    assert len(ids) == len(set(ids))
    assert "BearerToken" in spec["components"]["securitySchemes"]


def test_interactive_docs_page(client: httpx.Client) -> None:
    page = client.get("/schema")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert client.get("/schema/swagger").status_code == 200
