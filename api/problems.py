"""RFC 9457 problem details for every error, with a stable `code` and a sentence a person can act on."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from wallet.errors import DomainError

__all__ = [
    "PROBLEM_MEDIA_TYPE", "Problem", "exception_handlers", "problem_body", "problem_response", "problem_responses",
    "unavailable",
]

log = logging.getLogger("carbon_wallet.errors")

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://carbon-wallet.dev/problems/"

_KIND_STATUS = {
    "invalid": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "rate_limited": 429,
    "unavailable": 503,
}
_STATUS_CODE = {
    400: "invalid-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "unprocessable",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}

def problem_response(
    request: Request[Any, Any, Any],
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response[dict[str, Any]]:
    body = problem_body(request, status, code, detail)
    body.update({k: v for k, v in extra.items() if v is not None})
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def problem_body(request: Request[Any, Any, Any], status: int, code: str, detail: str) -> dict[str, Any]:
    """The RFC 9457 members every error carries; also set beside RFC 6749's in OAuth token errors."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        "code": code,
    }
    request_id = request.scope.get("state", {}).get("request_id")
    if request_id:
        body["request_id"] = request_id
    return body

def _domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    status = _KIND_STATUS[exc.kind]
    headers: dict[str, str] = {}
    retry_after = exc.extra.get("retry_after_s")
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if exc.code == "authentication-required":
        headers["WWW-Authenticate"] = 'Bearer realm="carbon-wallet"'
    elif status == 401 and exc.code.startswith(("token-", "session-")):
        headers["WWW-Authenticate"] = (
            f'Bearer realm="carbon-wallet", error="invalid_token", error_description="{exc.code}"'
        )
    elif exc.code == "insufficient-scope":
        headers["WWW-Authenticate"] = (
            f'Bearer realm="carbon-wallet", error="insufficient_scope", scope="{exc.extra.get("required_scope", "")}"'
        )
    return problem_response(request, status, exc.code, exc.detail, headers=headers or None, **exc.extra)


def _validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = exc.extra if isinstance(exc.extra, list) else None
    detail = exc.detail or "The request is not valid."
    if errors:
        first = errors[0]
        if isinstance(first, dict) and first.get("message"):
            where = first.get("key") or first.get("source") or ""
            detail = f"{first['message']}" + (f" (at {where})" if where else "")
    return problem_response(request, 400, "invalid-request", detail, errors=errors)

def _http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    code = _STATUS_CODE.get(status, HTTPStatus(status).phrase.lower().replace(" ", "-"))
    detail = exc.detail
    if status == 404:
        detail = f"Nothing is at {request.method} {request.url.path}; see /schema for the API."
    elif status == 405:
        detail = f"{request.method} is not allowed on {request.url.path}."
    elif status == 413:
        detail = "The request body is too large."
    elif status >= 500:
        log.error("http error %s on %s %s: %s", status, request.method, request.url.path, exc.detail)
        detail = "Something went wrong on our side; the request id helps us find it."
    headers = {k: v for k, v in (exc.headers or {}).items()} or None
    return problem_response(request, status, code, detail or HTTPStatus(status).description, headers=headers)

def _unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        request, 500, "internal-error", "Something went wrong on our side; the request id helps us find it."
    )

exception_handlers = {
    DomainError: _domain_error,
    ValidationException: _validation_error,
    HTTPException: _http_error,
    Exception: _unexpected,
}



# A backing server (PostgreSQL or Redis) is down or out of connections: a 503 to retry, never a bare 500.
BACKING_ERRORS: tuple[type[Exception], ...] = (
    asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.TooManyConnectionsError,
    RedisConnectionError, RedisTimeoutError,
)


def known_id(value: int, code: str, what: str) -> int:
    """A path id outside PostgreSQL's bigint is simply not found (a 404 naming `what`), never a 500."""
    if not 1 <= value < 2**63:
        raise DomainError("not_found", code, f"No {what} has this id.")
    return value


def log_unavailable(request: Request[Any, Any, Any], exc: Exception) -> None:
    log.error("backing service unavailable on %s %s: %r", request.method, request.url.path, exc)


def unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A backing server (PostgreSQL or Redis) is down: 503 with Retry-After, never a bare 500."""
    log_unavailable(request, exc)
    return problem_response(
        request, 503, "unavailable", "A backing service is briefly unavailable; retry in a few seconds.",
        headers={"Retry-After": "5"},
    )


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem document, as every error response carries it (OpenAPI only)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    request_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    retry_after_s: int | None = None
    field: str | None = None
    required_scope: str | None = None


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses an operation can answer, all as `application/problem+json`."""
    return {
        status: ResponseSpec(
            data_container=Problem, media_type=PROBLEM_MEDIA_TYPE, generate_examples=False,
            description=HTTPStatus(status).phrase,
        )
        for status in statuses
    }
