"""Report routes: the funnel as JSON pages with a per-channel summary, as streamed CSV, the
same summary per lead date (for charts) and per value of a chosen dimension (breakdown). The dashboard page is `dashboard.py` (included here).

All data routes require `X-API-Key: <API_KEY>` (the keyword routes' check, `keywords_api`).
Postgres is reached with synchronous psycopg in a worker thread (`asyncio.to_thread`), like the
keyword routes, through a small connection pool opened by this router's lifespan without
waiting, so the API starts and serves webhooks while Postgres is down (these routes answer 503).
A CSV export holds its own connection for as long as it streams, never one of the pool's.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
import psycopg
from fastapi import APIRouter, FastAPI, Query, Request, Security
from fastapi.responses import Response, StreamingResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from funnel_ingest.api import dashboard
from funnel_ingest.api.deps import (
    API_KEY_HEADER,
    Problem,
    check_api_key,
    problem,
    store_unavailable,
)
from funnel_ingest.report import query as report
from funnel_ingest.report.query import FilterError, PageKey, ReportFilter, configure_session
from funnel_ingest.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

CSV_BLOCK_BYTES = 64 * 1024
POOL_TIMEOUT_SECONDS = 5.0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    pool = ConnectionPool(settings.database_url, min_size=1, max_size=4, open=False,
                          kwargs={"autocommit": True, "connect_timeout": 5},
                          configure=configure_session, check=ConnectionPool.check_connection,
                          timeout=POOL_TIMEOUT_SECONDS, name="report")
    pool.open(wait=False)
    app.state.report_pool = pool
    try:
        yield
    finally:
        await asyncio.to_thread(pool.close, 5)


router = APIRouter(tags=["report"], lifespan=_lifespan)


# ---------------------------------------------------------------------------------------------
# Response models (the OpenAPI schema; responses are serialised with orjson)


class FunnelRow(BaseModel):
    """One lead. Dates are business dates in FUNNEL_TIMEZONE, `*_at` exact UTC timestamps,
    values integer Rupiah."""

    leads_date: date
    channel: str
    phone: str | None = Field(description="E.164; null when the provider withholds it")
    booking_date: date | None = Field(description="the first message of the lead that asks to "
                                                  "book; null when none did, paid or not")
    transaction_date: date | None
    transaction_value: int | None = Field(description="the first payment's amount")
    medium: str | None = Field(description="the messaging app of the lead's conversation "
                                           "(whatsapp, instagram, webchat, ...); not a channel")
    lead_id: str
    customer_key: str
    cycle: int
    lead_at: datetime
    booking_at: datetime | None
    transaction_at: datetime | None
    transaction_total: int | None = Field(description="all payments (down payment + rest)")
    transactions: int
    requested_date: date | None
    campaign_id: str | None = Field(description="as the payload gave it: mostly the id of the "
                                                "outbound message the lead answered")
    ad_id: str | None
    opening_keyword: str | None
    campaign: str | None = Field(description="the lead's campaign key, resolved by the campaign "
                                             "registry (GET /campaigns); the raw campaign_id "
                                             "when the registry does not know it")
    campaign_name: str | None = Field(description="the campaign's name; null for an id no "
                                                  "payload or import named")


class Conversion(BaseModel):
    """Shares (0..1); null when the step has no leads to convert."""

    lead_to_booking: float | None
    booking_to_transaction: float | None
    lead_to_transaction: float | None


class Revenue(BaseModel):
    sum: int = Field(description="sum of transaction_value (first payment of each lead)")
    average: int | None = Field(description="average transaction_value of the leads that paid "
                                            "a stated amount")
    payments_sum: int = Field(description="sum of transaction_total (every payment)")


class StageTimes(BaseModel):
    """Seconds from the lead's first message, over the leads whose booking / transaction was
    observed (a paid lead without a booking message has no booking time), as continuous
    percentiles (Postgres percentile_cont)."""

    median: float | None
    p90: float | None


class Figures(BaseModel):
    leads: int
    bookings: int = Field(description="leads that reached the booking stage: a booking message, "
                                      "or a payment without one (a paid lead has booked), so "
                                      "bookings >= transactions")
    transactions: int
    conversion: Conversion
    revenue: Revenue
    lead_to_booking_seconds: StageTimes
    lead_to_transaction_seconds: StageTimes


class ChannelFigures(Figures):
    channel: str


class Summary(BaseModel):
    by_channel: list[ChannelFigures]
    total: Figures


class Filters(BaseModel):
    start: date | None
    end: date | None
    channels: list[str]
    campaign: str | None
    mediums: list[str]
    timezone: str = Field(description="FUNNEL_TIMEZONE: the zone of the lead dates")


class FunnelReportPage(BaseModel):
    """A page of leads in report order (leads_date, lead_at, lead_id), and the summary of every
    lead the filters select (on the first page, or with `summary=true`)."""

    filters: Filters
    columns: list[str]
    rows: list[FunnelRow]
    limit: int
    next_cursor: str | None = Field(description="pass as `cursor` (same filters) for the next "
                                                "page; null on the last page")
    summary: Summary | None


class GroupFigures(Figures):
    value: str | None = Field(description="the group's value of `by`; null for the leads "
                                          "that have none (no campaign, no ad, ...)")
    name: str | None = Field(description="by=campaign: the campaign's name; null for a "
                                         "campaign key no payload or import named (shown as "
                                         "its key), and for the other dimensions")


class Breakdown(BaseModel):
    """The summary per value of `by`, the groups with the most leads first."""

    filters: Filters
    by: str
    groups: list[GroupFigures]
    omitted_groups: int = Field(description="groups beyond `limit`, not listed")
    omitted_leads: int = Field(description="the leads of those groups")


class Durations(BaseModel):
    """Leads per bucket of the time from their first message to their booking and to their
    transaction: bucket 0 is under `bounds_seconds[0]`, bucket i from `bounds_seconds[i-1]`
    (inclusive) to `bounds_seconds[i]`, the last one from the last bound on. Leads without an
    observed booking (transaction) are not in that stage's counts."""

    filters: Filters
    bounds_seconds: list[int]
    lead_to_booking: list[int]
    lead_to_transaction: list[int]


class DayFigures(ChannelFigures):
    leads_date: date


class DailyReport(BaseModel):
    """The summary per lead date and channel, in (leads_date, channel) order; days without
    leads are absent."""

    filters: Filters
    days: list[DayFigures]


_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "X-API-Key missing"},
    403: {"model": Problem, "description": "X-API-Key wrong"},
    422: {"model": Problem, "description": "Invalid filter, limit, format or cursor "
                                                 "(`detail` says which and why)"},
    503: {"model": Problem, "description": "API_KEY not configured, or Postgres "
                                                 "unavailable"},
}


# ---------------------------------------------------------------------------------------------
# Helpers

StartQ = Annotated[date | None, Query(description="first lead date (YYYY-MM-DD, inclusive, "
                                                  "FUNNEL_TIMEZONE); none = from the first")]
EndQ = Annotated[date | None, Query(description="last lead date (inclusive); none = to the last")]
ChannelQ = Annotated[list[str] | None, Query(
    description="repeatable: `channel=ads&channel=website`; none = every channel")]
CampaignQ = Annotated[str | None, Query(
    description="the leads' campaign: its key (`campaign`, as GET /campaigns lists it) or the "
                "raw campaign_id the leads carry")]
MediumQ = Annotated[list[str] | None, Query(
    description="repeatable: `medium=whatsapp&medium=instagram`; none = every medium")]
KeyQ = Annotated[str | None, Security(API_KEY_HEADER)]


def _filter(start: date | None, end: date | None, channel: list[str] | None,
            campaign: str | None, medium: list[str] | None) -> ReportFilter:
    return ReportFilter(start, end, tuple(channel or ()), campaign, tuple(medium or ()))


def _filters_doc(filt: ReportFilter, settings: Settings) -> dict[str, Any]:
    return {**filt.as_dict(), "timezone": settings.funnel_timezone}


def _json(body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), media_type="application/json")




async def _with_conn(request: Request, fn: Callable[[psycopg.Connection], T]) -> T:
    pool: ConnectionPool = request.app.state.report_pool

    def run() -> T:
        with pool.connection() as conn:
            return fn(conn)

    return await asyncio.to_thread(run)


async def _figures(request: Request, x_api_key: str | None,
                   filt_args: tuple[date | None, date | None, list[str] | None, str | None,
                                    list[str] | None],
                   query: Callable[[psycopg.Connection, ReportFilter], dict[str, Any]]
                   ) -> Response:
    """A route of figures over the filtered leads: the key checked, the filter validated (422),
    `query` run on a pooled connection (503 when Postgres fails) and its result answered with
    the filters."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    try:
        filt = _filter(*filt_args)
    except FilterError as exc:
        return problem(422, "invalid_filter", str(exc))
    try:
        body = await _with_conn(request, lambda conn: query(conn, filt))
    except psycopg.Error as exc:
        return store_unavailable(exc, "report")
    return _json({"filters": _filters_doc(filt, settings), **body})


# ---------------------------------------------------------------------------------------------
# CSV streaming


class CsvStream:
    """The report's CSV from a COPY on a connection of its own, in blocks of about
    `CSV_BLOCK_BYTES`, read one block at a time by worker threads (a lock keeps the copy on
    one thread at a time; `close` cancels an unfinished COPY and closes the connection)."""

    def __init__(self, settings: Settings, filt: ReportFilter, spreadsheet_safe: bool = True
                 ) -> None:
        self._lock = threading.Lock()
        self._conn = psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5)
        try:
            configure_session(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._blocks = _blocks(report.csv_chunks(self._conn, filt,
                                                 spreadsheet_safe=spreadsheet_safe))

    def next_block(self) -> bytes | None:
        with self._lock:
            return next(self._blocks, None)

    def close(self) -> None:
        with self._lock:
            try:
                self._blocks.close()
            finally:
                self._conn.close()


def _blocks(chunks: Iterator[bytes], size: int = CSV_BLOCK_BYTES) -> Iterator[bytes]:
    buf = bytearray()
    for chunk in chunks:
        buf += chunk
        if len(buf) >= size:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def _stream(csv: CsvStream, first: bytes) -> AsyncIterator[bytes]:
    finished = False
    try:
        block: bytes | None = first
        while block is not None:
            yield block
            block = await asyncio.to_thread(csv.next_block)
        finished = True
    except psycopg.Error as exc:  # headers are sent: the client sees a truncated body
        log.warning("CSV export aborted: %s: %s", type(exc).__name__, exc)
        raise
    finally:
        if finished:
            await asyncio.to_thread(csv.close)
        else:  # cancelled (client gone) or failed: close off the event loop, do not wait
            asyncio.get_running_loop().run_in_executor(None, csv.close)


async def _csv_response(settings: Settings, filt: ReportFilter, spreadsheet_safe: bool
                        ) -> Response:
    try:
        csv = await asyncio.to_thread(CsvStream, settings, filt, spreadsheet_safe)
    except psycopg.Error as exc:
        return store_unavailable(exc, "report")
    try:
        first = await asyncio.to_thread(csv.next_block)  # errors before any byte: a 503
    except psycopg.Error as exc:
        await asyncio.to_thread(csv.close)
        return store_unavailable(exc, "report")
    name = f"funnel_report_{filt.start or 'first'}_{filt.end or 'last'}.csv"
    return StreamingResponse(_stream(csv, first or b""), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"',
                                      "Cache-Control": "no-store"})


# ---------------------------------------------------------------------------------------------
# Routes


@router.get("/funnel-report", response_model=FunnelReportPage,
            summary="The funnel: leads (JSON pages or CSV) and conversion by channel",
            responses={**_PROBLEMS, 200: {"content": {"text/csv": {}}, "description":
                       "JSON page (format=json) or the whole report as streamed CSV"}})
async def funnel_report(
        request: Request,
        x_api_key: KeyQ,
        start: StartQ = None,
        end: EndQ = None,
        channel: ChannelQ = None,
        campaign: CampaignQ = None,
        medium: MediumQ = None,
        fmt: Annotated[Literal["json", "csv"], Query(
            alias="format", description="json: a page + summary; csv: every row, streamed")
        ] = "json",
        limit: Annotated[int, Query(ge=1, le=1000, description="rows per JSON page")] = 100,
        cursor: Annotated[str | None, Query(description="`next_cursor` of the previous page")
                          ] = None,
        summary: Annotated[bool | None, Query(
            description="include the summary (default: on the first page only)")] = None,
        spreadsheet_safe: Annotated[bool | None, Query(
            description="CSV: neutralize cells a spreadsheet would run as formulas (= + - @ "
                        "tab CR get a leading apostrophe); false = exact values, for "
                        "machine consumers. Default: CSV_SPREADSHEET_SAFE (true)")] = None):
    """Leads whose lead date is in `start`..`end` (inclusive, FUNNEL_TIMEZONE), of any of the
    `channel`s, of the `campaign`, on any of the `medium`s.

    **JSON**: `limit` rows in report order (leads_date, lead_at, lead_id) and `next_cursor`;
    the next page is the same request plus `cursor` (keyset pagination: no row is repeated or
    skipped between pages). `summary` covers every selected lead, per channel and in total:
    leads, bookings, transactions, step-to-step and overall conversion, revenue (sum,
    average), median and p90 seconds lead -> booking and lead -> transaction. A paid lead
    counts as booked (so the stages never grow from one to the next) while its `booking_date`
    stays empty unless a message asked to book; the booking times are over observed bookings.

    **CSV**: every selected row, streamed as Postgres produces it: `leads_date, channel, phone,
    booking_date, transaction_date, transaction_value`, then `medium` and the extra columns (dates ISO,
    values integer Rupiah, timestamps UTC). Text cells that a spreadsheet would run as a
    formula (starting with `=`, `+`, `-`, `@`, tab or CR; phones too) carry a leading `'`
    unless `spreadsheet_safe=false`.
    """
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    try:
        filt = _filter(start, end, channel, campaign, medium)
        if fmt == "csv" and cursor is not None:
            raise FilterError("cursor applies to format=json only (CSV has every row)")
        after = PageKey.decode(cursor, filt) if cursor else None
    except FilterError as exc:
        return problem(422, "invalid_filter", str(exc))
    if fmt == "csv":
        safe = settings.csv_spreadsheet_safe if spreadsheet_safe is None else spreadsheet_safe
        return await _csv_response(settings, filt, safe)
    with_summary = summary if summary is not None else cursor is None

    def query(conn: psycopg.Connection) -> dict[str, Any]:
        rows, next_key = report.page(conn, filt, limit, after)
        return {"filters": _filters_doc(filt, settings), "columns": list(report.REPORT_COLUMNS),
                "rows": rows, "limit": limit,
                "next_cursor": next_key.encode(filt) if next_key else None,
                "summary": report.summary(conn, filt) if with_summary else None}

    try:
        return _json(await _with_conn(request, query))
    except psycopg.Error as exc:
        return store_unavailable(exc, "report")


@router.get("/funnel-report/daily", response_model=DailyReport,
            summary="The funnel summary per lead date and channel (for charts)",
            responses=_PROBLEMS)
async def funnel_report_daily(
        request: Request,
        x_api_key: KeyQ,
        start: StartQ = None,
        end: EndQ = None,
        channel: ChannelQ = None,
        campaign: CampaignQ = None,
        medium: MediumQ = None,
        times: Annotated[bool, Query(
            description="false: leave the median / p90 times out (null), for charts of counts "
                        "and rates: a month over all channels answers about twice as fast")
        ] = True):
    """The same figures as the `/funnel-report` summary, for each (lead date, channel) that has
    leads, in date then channel order."""
    return await _figures(request, x_api_key, (start, end, channel, campaign, medium),
                          lambda conn, filt: {"days": report.daily(conn, filt, times=times)})


@router.get("/funnel-report/breakdown", response_model=Breakdown,
            summary="The funnel summary per channel, medium, campaign, ad or opening keyword",
            responses=_PROBLEMS)
async def funnel_report_breakdown(
        request: Request,
        x_api_key: KeyQ,
        by: Annotated[Literal["channel", "medium", "campaign", "ad", "opening_keyword"], Query(
            description="the dimension: channel, medium, campaign (the resolved campaign, "
                        "with its name), ad (ad_id) or opening_keyword")] = "channel",
        start: StartQ = None,
        end: EndQ = None,
        channel: ChannelQ = None,
        campaign: CampaignQ = None,
        medium: MediumQ = None,
        limit: Annotated[int, Query(ge=1, le=100, description="groups listed (most leads "
                                                             "first)")] = 20):
    """The same figures as the `/funnel-report` summary for each value of `by` among the
    selected leads: the `limit` groups with the most leads, and how many groups and leads were
    left out. Leads without a value (no campaign, no ad, ...) are one group, `value` null.
    By campaign, each group also has the campaign's `name` (null for an unknown id)."""
    return await _figures(request, x_api_key, (start, end, channel, campaign, medium),
                          lambda conn, filt: report.breakdown(conn, filt, by, limit))


@router.get("/funnel-report/durations", response_model=Durations,
            summary="How long leads took to book and to pay: the distributions",
            responses=_PROBLEMS)
async def funnel_report_durations(
        request: Request,
        x_api_key: KeyQ,
        start: StartQ = None,
        end: EndQ = None,
        channel: ChannelQ = None,
        campaign: CampaignQ = None,
        medium: MediumQ = None):
    """The distributions behind the summary's median and p90 lead -> booking and lead ->
    transaction times, as counts of leads per time bucket (from under 5 minutes to 30 days
    and more)."""
    return await _figures(request, x_api_key, (start, end, channel, campaign, medium),
                          report.durations)


router.include_router(dashboard.router)
