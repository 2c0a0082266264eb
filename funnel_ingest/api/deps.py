"""What the routes share: the one error shape `{"error", "detail"}` (its model for OpenAPI and
`problem()` to answer with it), the API-key guard of the report and keyword routes, and the
answer when Postgres is down. The body limits in `edge.py` answer with `problem()` too, at the
ASGI level, before any route runs."""

from __future__ import annotations

import hmac
import logging
from typing import Any

import psycopg
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel

from funnel_ingest.settings import Settings

log = logging.getLogger(__name__)

API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="The API_KEY setting; compared in constant time.")


class Problem(BaseModel):
    """Why a request was refused. `error` is a stable reason code, `detail` says what and where."""

    error: str
    detail: str


def problem(status: int, error: str, detail: str, **extra: Any) -> JSONResponse:
    """A refusal in the error shape (`extra`: more fields, e.g. the keyword routes' `errors`)."""
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


def check_api_key(settings: Settings, given: str | None) -> JSONResponse | None:
    """None when `given` is the API key; else the refusal to answer with."""
    expected = settings.api_key.get_secret_value()
    if not expected:
        return problem(503, "not_configured", "set API_KEY to use the keyword and report routes")
    if not given:
        return problem(401, "missing_api_key", "the X-API-Key header is missing")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return problem(403, "invalid_api_key", "the X-API-Key is wrong")
    return None


def store_unavailable(exc: Exception, what: str) -> JSONResponse:
    """503 for a failed Postgres call of `what` (logged with the reason)."""
    log.warning("%s: Postgres unavailable: %s: %s", what, type(exc).__name__, exc)
    if isinstance(exc, psycopg.errors.UndefinedTable):
        return problem(503, "store_unavailable",
                       "the funnel tables do not exist yet; run `funnel migrate`")
    return problem(503, "store_unavailable", f"Postgres unavailable: {type(exc).__name__}")
