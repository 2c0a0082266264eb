"""Keyword routes: the list, its versions, diffs and rollbacks, publishing with an impact preview
first (docs/funnel.md, Keywords).

All routes require `X-API-Key: <API_KEY>`. Postgres and Redis are reached through the same
synchronous store functions as the CLI and the worker (`store.keywords`, `store.impact`), run in
a worker thread (`asyncio.to_thread`): these are rare operator calls, the sheet client (gspread)
is blocking anyway, and one code path means one set of tests. No connection is opened at
start-up, so the API (and /webhooks) starts and serves while Postgres is down; these routes then
answer 503.

With GSHEET_KEY set the sheet is the source of truth: PUT /keywords, a rollback and a sync of the
CSV answer 409 naming the sheet. Publishing a list that leaves a stage without any active
keyword answers 409 unless `force=true`. `dry_run=true` (PUT, sync) previews the impact and
writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import date, datetime
from collections.abc import Callable
from typing import Annotated, Any, Literal

import psycopg
from fastapi import APIRouter, Path, Query, Request, Security
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from funnel_ingest.api.deps import (
    API_KEY_HEADER,
    Problem,
    check_api_key,
    problem,
    store_unavailable,
)
from funnel_ingest.engine.keywords import (
    EmptyKeywordSetError,
    KeywordSet,
    KeywordSetError,
    diff,
    emptied_stages,
    from_json_items,
)
from funnel_ingest.settings import Settings
from funnel_ingest.store import impact as impact_store
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


class SourceOfTruth(BaseModel):
    """Where the keyword list is edited. `sheet`: the Google Sheet (GSHEET_KEY); API writes
    answer 409. `api`: PUT /keywords, rollbacks and explicit syncs; the scheduled sync publishes
    `file` only when no version exists or when a sync of that file published the current one."""

    kind: Literal["sheet", "api"]
    detail: str
    sheet_key: str | None = None
    worksheet: str | None = Field(default=None, description="null: the first worksheet")
    file: str | None = Field(default=None, description="the CSV the scheduled sync reads")
    writable: bool = Field(description="PUT /keywords and rollbacks are accepted")


class Publication(BaseModel):
    """One time a version became current."""

    version: str
    previous: str | None
    action: Literal["seed", "sync", "put", "rollback"]
    source: str = Field(description="sheet:…, csv:…, default:keywords.csv; api (PUT); api or "
                                    "cli (rollback)")
    forced: bool = Field(description="published with force although it emptied a stage")
    published_at: datetime


class KeywordVersion(BaseModel):
    """The current keyword version and its entries."""

    version: str = Field(description="first 16 hex digits of SHA-256 over the sorted content")
    source: str = Field(examples=["sheet:1AbC...", "csv:/etc/funnel/keywords.csv", "api"])
    created_at: datetime
    row_count: int
    warnings: list[str] = []
    keywords: list[KeywordItem]
    source_of_truth: SourceOfTruth
    published: Publication | None = Field(
        default=None, description="how this version became current")


class KeywordsPublished(BaseModel):
    """The keyword list was validated and its version is current."""

    version: str
    changed: bool = Field(description="false when that content was already the current version")
    source: str
    row_count: int
    forced: bool = Field(default=False, description="a stage was emptied, accepted by force")
    warnings: list[str] = Field(default=[], description="duplicates collapsed, stages without "
                                                        "active keywords, cache not refreshed")


class VersionSummary(BaseModel):
    version: str
    source: str = Field(description="where this content first came from")
    created_at: datetime
    activated_at: datetime = Field(description="when it last became current")
    row_count: int
    current: bool
    active: dict[str, int] = Field(description="active keywords per stage")
    last_publication: Publication | None


class KeywordVersions(BaseModel):
    """Every stored version (none is ever deleted), the most recently current first."""

    source_of_truth: SourceOfTruth
    current: str | None
    versions: list[VersionSummary]


class KeywordChangeItem(BaseModel):
    keyword: str
    before: KeywordItem
    after: KeywordItem


class StageDiff(BaseModel):
    added: list[KeywordItem]
    removed: list[KeywordItem]
    changed: list[KeywordChangeItem] = Field(description="same keyword (case and spacing "
                                                         "aside), other spelling, channel or "
                                                         "active flag")


class KeywordDiff(BaseModel):
    """What turns version `from` into version `to`, per stage."""

    from_version: str = Field(serialization_alias="from")
    to_version: str = Field(serialization_alias="to")
    added: int
    removed: int
    changed: int
    emptied_stages: list[str] = Field(description="stages with active keywords in `from` and "
                                                  "none in `to` (publishing needs force)")
    stages: dict[str, StageDiff]


class Counts(BaseModel):
    leads: int
    bookings: int = Field(description="leads that booked or paid (as the report counts them)")
    transactions: int
    value: int = Field(description="Rupiah of the leads' first payments")


class ChannelImpact(BaseModel):
    channel: str
    before: Counts
    after: Counts
    change: Counts


class StageMessages(BaseModel):
    stage: str
    before: int = Field(description="the window's messages with this stage, current version")
    after: int = Field(description="… with the candidate")
    change: int


class ImpactExample(BaseModel):
    excerpt: str
    direction: str
    messages: int = Field(description="changed messages with this text")
    stages_before: list[str]
    stages_after: list[str]
    keywords_before: list[str]
    keywords_after: list[str]
    channel_before: str | None
    channel_after: str | None


class ImpactWindow(BaseModel):
    start: date
    end: date
    days: int


class KeywordImpact(BaseModel):
    """A dry run: what publishing the candidate would change over the window, nothing written.
    `before` is the stored funnel of the leads opened in the window, `after` the same with the
    customers whose messages classify differently recomputed with the candidate."""

    dry_run: Literal[True] = True
    current_version: str | None
    candidate_version: str
    window: ImpactWindow
    messages: int = Field(description="stored messages in the window")
    changed_messages: int = Field(description="messages whose classification would change")
    customers_recomputed: int
    leads_changed: int = Field(description="leads of the window whose row would change, appear "
                                           "or disappear")
    stages: list[StageMessages]
    channels: list[ChannelImpact]
    total: ChannelImpact = Field(description="all channels")
    examples: list[ImpactExample]
    emptied_stages: list[str]
    needs_force: bool = Field(description="publishing it needs force=true (a stage emptied)")
    stale_messages: int = Field(description="messages of the window classified by another "
                                            "version than the current one")
    seconds: float
    step_seconds: dict[str, float]
    warnings: list[str] = Field(default=[], description="the candidate's warnings")


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
        409: "The Google Sheet is the source of truth (`sheet_is_source_of_truth`), or the list "
             "leaves a stage without active keywords (`stage_emptied`: add force=true); "
             "nothing changed",
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


def _refusal(exc: Exception) -> JSONResponse | None:
    """The answer to a refused publication, or None for an unexpected error."""
    if isinstance(exc, keyword_store.SourceOfTruthError):
        return problem(409, "sheet_is_source_of_truth", str(exc),
                       source_of_truth=exc.truth.as_dict())
    if isinstance(exc, keyword_store.StageEmptiedError):
        return problem(409, "stage_emptied", str(exc), stages=exc.stages)
    if isinstance(exc, keyword_store.UnknownVersionError):
        return problem(404, "unknown_version", str(exc))
    if isinstance(exc, KeywordSetError):
        return _set_error(exc)
    if isinstance(exc, psycopg.Error):
        return store_unavailable(exc, "keywords")
    return None


def _published(result: keyword_store.SyncResult) -> KeywordsPublished:
    return KeywordsPublished(version=result.version, changed=result.changed, source=result.source,
                             row_count=result.row_count, forced=result.forced,
                             warnings=list(result.warnings))


def _publication(p: keyword_store.Publication | None) -> Publication | None:
    return None if p is None else Publication(
        version=p.version, previous=p.previous, action=p.action, source=p.source,
        forced=p.forced, published_at=p.published_at)


def _truth(settings: Settings) -> SourceOfTruth:
    return SourceOfTruth(**keyword_store.source_of_truth(settings).as_dict())


def _connect(settings: Settings) -> psycopg.Connection:
    return psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True)


def _current(settings: Settings) -> KeywordVersion | None:
    with _connect(settings) as conn:
        kset = keyword_store.current_version(conn)
        last = keyword_store.last_publication(conn)
    if kset is None:
        return None
    return KeywordVersion(version=kset.version, source=kset.source, created_at=kset.created_at,
                          row_count=len(kset.keywords), warnings=list(kset.warnings),
                          keywords=[KeywordItem(**i) for i in kset.items()],
                          source_of_truth=_truth(settings),
                          published=_publication(last if last and last.version == kset.version
                                                 else None))


def _impact(impact: impact_store.Impact, warnings: list[str]) -> KeywordImpact:
    return KeywordImpact.model_validate({**impact.as_dict(), "warnings": warnings})


async def _guarded(call: Callable[[], Any]) -> Any:
    """Run a store call in a worker thread; its refusal as a response."""
    try:
        return await asyncio.to_thread(call)
    except (keyword_store.SourceOfTruthError, keyword_store.StageEmptiedError,
            keyword_store.UnknownVersionError, KeywordSetError, psycopg.Error) as exc:
        return _refusal(exc)


Days = Annotated[int, Query(ge=1, le=impact_store.MAX_DAYS,
                            description="dry_run: the window, in business days up to today")]
DryRun = Annotated[bool, Query(description="preview the impact over the window; write nothing")]
Force = Annotated[bool, Query(description="publish even if a stage that has active keywords "
                                          "now would have none")]


@router.get("/keywords", response_model=KeywordVersion, summary="The current keyword list",
            responses=_doc(401, 403, 404, 503))
async def get_keywords(request: Request,
                       x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]):
    """The current version, where it came from, how it became current, its entries (inactive
    ones included) and the source of truth of the list."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    try:
        current = await asyncio.to_thread(_current, settings)
    except psycopg.Error as exc:
        return store_unavailable(exc, "keywords")
    if current is None:
        truth = keyword_store.source_of_truth(settings)
        return problem(404, "no_keywords", "no keyword version published yet; "
                                           "POST /keywords/sync or PUT /keywords",
                       source_of_truth=truth.as_dict())
    return current


_PUT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "minItems": 1, "items": KeywordItem.model_json_schema()}}}}}


@router.put("/keywords", response_model=KeywordsPublished | KeywordImpact,
            summary="Replace the keyword list, or preview its impact (dry_run=true)",
            openapi_extra=_PUT_BODY, responses=_doc(400, 401, 403, 409, 422, 503))
async def put_keywords(request: Request,
                       x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
                       dry_run: DryRun = False, force: Force = False,
                       days: Days = impact_store.DEFAULT_DAYS):
    """Replace the whole list with the body's JSON array. Every bad item is reported by its
    0-based index (422) and nothing changes; so does an empty array. Duplicates are collapsed
    (warnings). Publishing the current content again answers `changed: false`.

    `dry_run=true` publishes nothing: the stored messages of the last `days` days are
    re-classified with this list in memory and the answer reports what would change (messages,
    and leads, bookings and transactions per channel, with examples). Allowed under the sheet.
    Else 409 when the Google Sheet is the source of truth, or when a stage would lose all its
    active keywords (`force=true` publishes anyway)."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    truth = keyword_store.source_of_truth(settings)
    if not dry_run and not truth.writable:
        return _refusal(keyword_store.SourceOfTruthError(truth, "PUT /keywords"))
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
    if dry_run:
        candidate = KeywordSet.build(keywords, "api", warnings=warnings)
        result = await _guarded(lambda: impact_store.preview_with(
            settings, candidate, days=days))
        return result if isinstance(result, JSONResponse) else _impact(result, warnings)
    async with _lock(request):
        result = await _guarded(lambda: keyword_store.replace(
            settings, keywords, source="api", warnings=warnings, force=force))
    return result if isinstance(result, JSONResponse) else _published(result)


@router.post("/keywords/sync", response_model=KeywordsPublished | KeywordImpact,
             summary="Pull the keywords from the Google Sheet / CSV now (or preview them)",
             responses=_doc(401, 403, 409, 422, 502, 503, d422=(
                 "The sheet/CSV has bad rows (each listed by row number) or no keywords; "
                 "the previous version stays current")))
async def sync_keywords(
        request: Request,
        x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
        source: Annotated[Literal["auto", "sheet", "csv"], Query(
            description="auto: the sheet when GSHEET_KEY is set, else KEYWORDS_CSV or the "
                        "packaged default; csv while the sheet is the source of truth: 409")
                          ] = "auto",
        dry_run: DryRun = False, force: Force = False, days: Days = impact_store.DEFAULT_DAYS):
    """Read, validate and publish the configured source (an explicit sync: the file is
    published even when the current version came from PUT /keywords). Any failure leaves the
    previous version current: 502 when the sheet cannot be read (`error` = `sheet_<reason>`),
    409 when a stage would lose all its active keywords (unless `force=true`). `dry_run=true`
    reads the source and previews its impact instead."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied

    def preview() -> tuple[impact_store.Impact, list[str]]:
        kset = keyword_store.read_source(settings, source=source)
        return impact_store.preview_with(settings, kset, days=days), list(kset.warnings)

    try:
        if dry_run:  # reads only: no need to wait for other keyword changes
            impact, warnings = await asyncio.to_thread(preview)
            return _impact(impact, warnings)
        async with _lock(request):
            result = await asyncio.to_thread(keyword_store.sync, settings, source=source,
                                             force=force)
    except SheetError as exc:
        # our configuration: 503; Google's answer (auth, not found, empty...): 502
        status = 503 if exc.reason in ("not_configured", "bad_credentials") else 502
        return problem(status, f"sheet_{exc.reason}",
                       f"{exc.detail}; the previous keyword version stays current")
    except KeywordSourceError as exc:
        return problem(503, exc.reason, f"{exc.detail}; the previous keyword version stays "
                                        "current")
    except (keyword_store.SourceOfTruthError, keyword_store.StageEmptiedError,
            KeywordSetError, psycopg.Error) as exc:
        return _refusal(exc)
    return _published(result)


def _versions(settings: Settings, limit: int) -> KeywordVersions:
    with _connect(settings) as conn:
        rows = keyword_store.list_versions(conn, limit)
    return KeywordVersions(
        source_of_truth=_truth(settings),
        current=next((v.version for v in rows if v.current), None),
        versions=[VersionSummary(version=v.version, source=v.source, created_at=v.created_at,
                                 activated_at=v.activated_at, row_count=v.row_count,
                                 current=v.current, active=v.active,
                                 last_publication=_publication(v.last)) for v in rows])


@router.get("/keywords/versions", response_model=KeywordVersions,
            summary="Every stored keyword version",
            responses=_doc(401, 403, 422, 503, d422="A bad limit"))
async def keyword_versions(request: Request,
                           x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
                           limit: Annotated[int, Query(ge=1, le=1000)] = 100):
    """The stored versions, the most recently current first: where each came from, when it was
    last made current and how (seed, sync, put, rollback), active keywords per stage."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    return await _guarded(lambda: _versions(settings, limit))


VersionId = Annotated[str, Path(pattern="^[0-9a-f]{16}$", description="a version (16 hex)")]


def _diff(settings: Settings, old: str, new: str | None) -> KeywordDiff:
    with _connect(settings) as conn:
        a = keyword_store.resolve(conn, old)
        b = keyword_store.resolve(conn, new)
    d = diff(a.keywords, b.keywords)
    return KeywordDiff(from_version=a.version, to_version=b.version, added=len(d.added),
                       removed=len(d.removed), changed=len(d.changed),
                       emptied_stages=emptied_stages(a.keywords, b.keywords),
                       stages=d.by_stage())


@router.get("/keywords/diff", response_model=KeywordDiff, response_model_by_alias=True,
            summary="What changed between two keyword versions",
            responses=_doc(401, 403, 404, 422, 503, d404="An unknown version",
                           d422="A parameter is not a version"))
async def keyword_diff(
        request: Request, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
        from_version: Annotated[str, Query(alias="from", pattern="^[0-9a-f]{16}$",
                                           description="the older version")],
        to_version: Annotated[str | None, Query(alias="to", pattern="^[0-9a-f]{16}$",
                                                description="default: the current one")] = None):
    """Per stage, the keywords added, removed and changed (channel, active flag or spelling)
    from `from` to `to`."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    return await _guarded(lambda: _diff(settings, from_version, to_version))


@router.post("/keywords/rollback/{version}", response_model=KeywordsPublished,
             summary="Make a stored keyword version current again",
             responses=_doc(401, 403, 404, 409, 422, 503, d404="No such version",
                            d422="Not a version, or a bad force flag"))
async def rollback_keywords(request: Request,
                            x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
                            version: VersionId, force: Force = False):
    """The version becomes current again (Postgres and the Redis cache); messages classified
    from now on use it, and a backfill applies it to history. 404 for a version never stored;
    409 under the Google Sheet, or when it lacks every keyword of a stage the current version
    has (unless `force=true`)."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    async with _lock(request):
        result = await _guarded(lambda: keyword_store.rollback(
            settings, version, by="api", force=force))
    return result if isinstance(result, JSONResponse) else _published(result)
