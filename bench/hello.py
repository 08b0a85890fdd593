"""The baseline: the smallest Litestar app, served exactly like the real API (uvicorn, one worker, no access
log), so the ratio to it isolates what our middleware, auth and database add on this machine today."""

from __future__ import annotations

from litestar import Litestar, get


@get("/", sync_to_thread=False)
def hello() -> dict[str, str]:
    """One constant JSON document: no I/O, no middleware."""
    return {"hello": "world"}


app = Litestar(route_handlers=[hello], logging_config=None)
