"""Keyword routes: list, replace and sync the keyword list (docs/funnel.md).

All routes require `X-API-Key: <API_KEY>`. Postgres and Redis are reached through the same
synchronous store functions as the CLI and the worker (`engine.keyword_store`), run in a worker
thread (`asyncio.to_thread`): these are rare operator calls, the sheet client (gspread) is
blocking anyway, and one code path means one set of tests. No connection is opened at start-up,
so the API (and /webhooks) starts and serves while Postgres is down; these routes then answer 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from funnel_ingest.api.deps import (
    API_KEY_HEADER,
    Problem,
    check_api_key,
    problem,
    store_unavailable,
)
from funnel_ingest.engine.keywords import EmptyKeywordSetError, KeywordSetError, from_json_items
from funnel_ingest.settings import Settings
from funnel_ingest.store import keywords as keyword_store
from funnel_ingest.store.sheets import KeywordSourceError, SheetError

log = logging.getLogger(__name__)
router = APIRouter(tags=["keywords"])


class KeywordItem(BaseModel):
    """One keyword. `channel`: for opening keywords, the channel or campaign whose prefilled
    text it is (ads, campaign_blast, website, direct or a campaign name)."""

    stage: Literal["opening", "booking", "transaction"]
    keyword: str = Field(min_length=1, examples=["reservasi"])
    channel: str | None = Field(default=None, examples=["ads"])
    active: bool = Field(default=True, description="TRUE/FALSE, yes/no, 1/0, ya/tidak accepted")


class KeywordVersion(BaseModel):
    """The current keyword version and its entries."""

    version: str = Field(description="first 16 hex digits of SHA-256 over the sorted content")
    source: str = Field(examples=["sheet:1AbC...", "csv:/etc/funnel/keywords.csv", "api"])
    created_at: datetime
    row_count: int
    warnings: list[str] = []
    keywords: list[KeywordItem]


class KeywordsPublished(BaseModel):
    """The keyword list was validated and its version is current."""

    version: str
    changed: bool = Field(description="false when that content was already the current version")
    source: str
    row_count: int
    warnings: list[str] = Field(default=[], description="duplicates collapsed, stages without "
                                                        "active keywords, cache not refreshed")


class RowProblem(BaseModel):
    """One bad keyword: `index` (0-based, PUT body) or `row` (1-based sheet/CSV row, header 1)."""

    index: int | None = None
    row: int | None = None
    message: str


class KeywordProblem(Problem):
    """Why a request was refused; `errors` lists the bad rows."""

    errors: list[RowProblem] = []


def _doc(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    text = {
        401: "X-API-Key missing", 403: "X-API-Key wrong",
        422: "Bad keywords (every bad index/row listed) or an empty list; nothing changed",
        502: "The Google Sheet could not be read; the previous version stays current",
        503: "API_KEY not configured, or Postgres unavailable",
        404: "No keyword version published yet",
        400: "Body is not JSON",
    }
    return {c: {"model": KeywordProblem, "description": descriptions.get(f"d{c}", text[c])}
            for c in codes}






def _lock(request: Request) -> asyncio.Lock:
    """One keyword change at a time per process (Postgres serialises across processes)."""
    state = request.app.state
    lock = getattr(state, "keywords_lock", None)
    if lock is None:
        lock = state.keywords_lock = asyncio.Lock()
    return lock


def _set_error(exc: KeywordSetError) -> JSONResponse:
    if isinstance(exc, EmptyKeywordSetError):
        return problem(422, "empty_keyword_set",
                       f"{exc}; the previous keyword version stays current", errors=[])
    errors = [{e.label: e.row, "message": e.message} if e.label in ("index", "row")
              else {"message": e.message} for e in exc.errors]
    return problem(422, "invalid_keywords", str(exc), errors=errors)




def _published(result: keyword_store.SyncResult) -> KeywordsPublished:
    return KeywordsPublished(version=result.version, changed=result.changed, source=result.source,
                             row_count=result.row_count, warnings=list(result.warnings))


def _current(settings: Settings) -> KeywordVersion | None:
    with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
        kset = keyword_store.current_version(conn)
    if kset is None:
        return None
    return KeywordVersion(version=kset.version, source=kset.source, created_at=kset.created_at,
                          row_count=len(kset.keywords), warnings=list(kset.warnings),
                          keywords=[KeywordItem(**i) for i in kset.items()])


@router.get("/keywords", response_model=KeywordVersion, summary="The current keyword list",
            responses=_doc(401, 403, 404, 503))
async def get_keywords(request: Request,
                       x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]):
    """The current version, where it came from, and its entries (inactive ones included)."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    try:
        current = await asyncio.to_thread(_current, settings)
    except psycopg.Error as exc:
        return store_unavailable(exc, "keywords")
    if current is None:
        return problem(404, "no_keywords", "no keyword version published yet; "
                                           "POST /keywords/sync or PUT /keywords")
    return current


_PUT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "minItems": 1, "items": KeywordItem.model_json_schema()}}}}}


@router.put("/keywords", response_model=KeywordsPublished, summary="Replace the keyword list",
            openapi_extra=_PUT_BODY, responses=_doc(400, 401, 403, 422, 503))
async def put_keywords(request: Request,
                       x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]):
    """Replace the whole list with the body's JSON array. Every bad item is reported by its
    0-based index (422) and nothing changes; so does an empty array. Duplicates are collapsed
    (warnings). Publishing the current content again answers `changed: false`."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    try:
        items = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError) as exc:
        return problem(400, "invalid_json", f"the body is not JSON: {exc}")
    warnings: list[str] = []
    try:
        keywords = from_json_items(items, warnings=warnings)
        if not keywords:
            raise EmptyKeywordSetError("the request")
    except KeywordSetError as exc:
        return _set_error(exc)
    async with _lock(request):
        try:
            result = await asyncio.to_thread(keyword_store.replace, settings, keywords,
                                             source="api", warnings=warnings)
        except psycopg.Error as exc:
            return store_unavailable(exc, "keywords")
    return _published(result)


@router.post("/keywords/sync", response_model=KeywordsPublished,
             summary="Pull the keywords from the Google Sheet / CSV now",
             responses=_doc(401, 403, 422, 502, 503, d422=(
                 "The sheet/CSV has bad rows (each listed by row number) or no keywords; "
                 "the previous version stays current")))
async def sync_keywords(
        request: Request,
        x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
        source: Annotated[Literal["auto", "sheet", "csv"], Query(
            description="auto: the sheet when GSHEET_KEY is set, else KEYWORDS_CSV or the "
                        "packaged default")] = "auto"):
    """Read, validate and publish the configured source. Any failure leaves the previous
    version current: 502 when the sheet cannot be read (`error` = `sheet_<reason>`)."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    async with _lock(request):
        try:
            result = await asyncio.to_thread(keyword_store.sync, settings, source=source)
        except SheetError as exc:
            # our configuration: 503; Google's answer (auth, not found, empty...): 502
            status = 503 if exc.reason in ("not_configured", "bad_credentials") else 502
            return problem(status, f"sheet_{exc.reason}",
                           f"{exc.detail}; the previous keyword version stays current")
        except KeywordSourceError as exc:
            return problem(503, exc.reason, f"{exc.detail}; the previous keyword version stays "
                                            "current")
        except KeywordSetError as exc:
            return _set_error(exc)
        except psycopg.Error as exc:
            return store_unavailable(exc, "keywords")
    return _published(result)
