"""Campaign routes: the registry with each campaign's figures, and imports of a CRM's broadcast
log (docs/funnel.md, Campaigns).

    GET  /campaigns            every campaign: name, kind, sent, leads, bookings, transactions,
                               revenue, reply rate
    PUT  /campaigns            JSON entries (message id, template, broadcast id or ad id ->
                               campaign name, sent count), set idempotently
    POST /campaigns/import     the same as a CSV file (Content-Type: text/csv)

All routes require `X-API-Key: <API_KEY>`. Postgres is reached with synchronous psycopg in a
worker thread, as the keyword routes do (rare operator calls; one code path with the CLI: the
import is `store.funnel.import_campaigns`). A bad import changes nothing and gets 422 with
every bad entry listed.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

import orjson
import psycopg
from fastapi import APIRouter, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from funnel_ingest.api.deps import (
    API_KEY_HEADER,
    Problem,
    check_api_key,
    problem,
    store_unavailable,
)
from funnel_ingest.engine.campaigns import (
    CampaignImportError,
    from_csv_text,
    from_json_items,
)
from funnel_ingest.report.campaigns import campaign_figures
from funnel_ingest.settings import Settings
from funnel_ingest.store import funnel as funnel_store

router = APIRouter(tags=["campaigns"])

MAX_IMPORT_BYTES = 32 * 1024 * 1024
"""The largest import body: a broadcast log of about 200,000 messages."""


class Campaign(BaseModel):
    """One campaign and how its leads did. `leads` are the replies it got (the leads whose
    resolved campaign it is)."""

    campaign: str = Field(description="the key: template:<name>, broadcast:<id>, ad:<id>, a "
                                      "generic campaign label, or an imported campaign's name")
    name: str | None = Field(description="null: no payload or import named it (shown as its "
                                         "key)")
    known: bool = Field(description="false for a key of leads the registry does not know: an "
                                    "id nothing named yet")
    kind: str | None = Field(description="broadcast, template or ad (null when unknown)")
    source: str | None = Field(description="where it came from: whatsapp, qontak, generic or "
                                           "import")
    sent: int | None = Field(description="messages sent, from imports; null when unknown")
    leads: int
    bookings: int = Field(description="leads that booked (a paid lead counts as booked)")
    transactions: int
    revenue: int = Field(description="sum of the leads' first payments (integer Rupiah)")
    reply_rate: float | None = Field(description="leads / sent; null when sent is unknown")
    lead_to_transaction: float | None
    first_seen_at: datetime | None = Field(description="its first message in the payloads")
    last_seen_at: datetime | None = Field(description="its latest message (to the hour)")


class CampaignList(BaseModel):
    """The campaigns with the most leads first."""

    campaigns: list[Campaign]
    total: int
    omitted: int = Field(description="campaigns beyond `limit`, not listed")


class CampaignImport(BaseModel):
    """What an import changed. Repeating it changes nothing (every count but `entries` and
    `campaigns` 0)."""

    entries: int
    campaigns: int = Field(description="distinct campaign names in the entries")
    refs_added: int = Field(description="message ids, templates, broadcasts or ads new to the "
                                        "registry")
    refs_moved: int = Field(description="refs now in another campaign (the entries' own, and "
                                        "the messages sent as an imported template or "
                                        "broadcast)")
    campaigns_removed: int = Field(description="campaigns no ref leads to any more")
    leads_updated: int = Field(description="leads whose campaign changed")
    warnings: list[str] = []


class EntryProblem(BaseModel):
    """One bad entry: `index` (0-based, JSON) or `row` (1-based CSV row, header 1)."""

    index: int | None = None
    row: int | None = None
    message: str


class ImportProblem(Problem):
    errors: list[EntryProblem] = []


def _doc(*codes: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    text = {400: "Body is not JSON (PUT) or not UTF-8 text (POST)",
            401: "X-API-Key missing", 403: "X-API-Key wrong",
            413: f"Body larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MiB",
            415: "POST: not Content-Type text/csv",
            422: "Bad entries (every one listed in `errors`) or no entries; nothing changed",
            503: "API_KEY not configured, or Postgres unavailable"}
    return {c: {"model": ImportProblem, "description": descriptions.get(f"d{c}", text[c])}
            for c in codes}


async def _body(request: Request) -> bytes | JSONResponse:
    """The request body, refused (413) past MAX_IMPORT_BYTES before more is read."""
    size = int(request.headers.get("content-length") or 0)
    too_large = problem(413, "body_too_large",
                        f"an import is at most {MAX_IMPORT_BYTES:,} bytes; split it")
    if size > MAX_IMPORT_BYTES:
        return too_large
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > MAX_IMPORT_BYTES:
            return too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(exc: CampaignImportError) -> JSONResponse:
    errors = [{e.label: e.position, "message": e.message} if e.label in ("index", "row")
              else {"message": e.message} for e in exc.errors[:1000]]
    return problem(422, "invalid_campaigns", f"{exc}; nothing was imported", errors=errors)


async def _import(request: Request, entries: list, warnings: list[str]) -> Response:
    settings: Settings = request.app.state.settings

    def run() -> dict[str, Any]:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            return funnel_store.import_campaigns(conn, entries).as_dict()

    try:
        result = await asyncio.to_thread(run)
    except psycopg.Error as exc:
        return store_unavailable(exc, "campaigns")
    return Response(orjson.dumps({**result, "warnings": warnings}),
                    media_type="application/json")


@router.get("/campaigns", response_model=CampaignList, summary="Every campaign and its figures",
            responses=_doc(401, 403, 422, 503, d422="`limit` out of range"))
async def list_campaigns(
        request: Request, x_api_key: Annotated[str | None, Security(API_KEY_HEADER)],
        limit: Annotated[int, Query(ge=1, le=5000, description="campaigns listed (most leads "
                                                               "first)")] = 1000):
    """The registry's campaigns and the campaign keys of leads it does not know (an unknown id
    is listed as it is, `known` false), the most leads first: name, kind, sent count, leads
    (the replies), bookings, transactions, revenue, reply rate (leads / sent, null when the
    sent count is unknown) and lead -> transaction rate."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied

    def run() -> dict[str, Any]:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            return campaign_figures(conn, limit)

    try:
        body = await asyncio.to_thread(run)
    except psycopg.Error as exc:
        return store_unavailable(exc, "campaigns")
    return Response(orjson.dumps(body), media_type="application/json")


_PUT_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {
    "type": "array", "minItems": 1, "items": {
        "type": "object", "additionalProperties": False,
        "properties": {"message_id": {"type": "string"}, "template": {"type": "string"},
                       "broadcast_id": {"type": "string"}, "ad_id": {"type": "string"},
                       "campaign": {"type": "string", "minLength": 1, "maxLength": 200},
                       "sent": {"type": "integer", "minimum": 0}},
        "required": ["campaign"]}}}}}}


@router.put("/campaigns", response_model=CampaignImport,
            summary="Name campaigns: message ids, templates, broadcasts or ads -> campaign",
            openapi_extra=_PUT_BODY, responses=_doc(400, 401, 403, 413, 422, 503))
async def put_campaigns(request: Request,
                        x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]):
    """Set the campaign of each entry's ref (exactly one of `message_id`, `template`,
    `broadcast_id`, `ad_id`) to the campaign named `campaign`, with its `sent` count (default 1
    for a message id, unknown otherwise). Refs not in the body are left as they are; an import
    wins over what payloads taught, and the messages sent as an imported template or broadcast
    move with it. The leads whose campaign changes are updated in the same transaction. The
    same body again changes nothing."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return problem(400, "invalid_json", f"the body is not JSON: {exc}")
    try:
        entries = from_json_items(items)
    except CampaignImportError as exc:
        return _invalid(exc)
    return await _import(request, entries, [])


@router.post("/campaigns/import", response_model=CampaignImport,
             summary="Name campaigns from a CRM's broadcast log (CSV)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "text/csv": {"schema": {"type": "string"}}}}},
             responses=_doc(400, 401, 403, 413, 415, 422, 503))
async def import_campaigns_csv(request: Request,
                               x_api_key: Annotated[str | None, Security(API_KEY_HEADER)]):
    """The body is a CSV file with a header row: a `campaign` column (or `campaign_name`,
    `broadcast_name`) and one of `message_id` (or `wamid`, `whatsapp_message_id`),
    `template` (or `template_name`), `broadcast_id`, `ad_id`; optionally `sent` (or
    `sent_count`). Other columns are ignored (listed in `warnings`). Applied as PUT /campaigns
    applies its entries; every bad row is listed by its row number (header = 1)."""
    settings: Settings = request.app.state.settings
    if (denied := check_api_key(settings, x_api_key)) is not None:
        return denied
    kind = request.headers.get("content-type", "").split(";")[0].strip().casefold()
    if kind not in ("text/csv", "application/csv", "text/plain"):
        return problem(415, "unsupported_media_type",
                       f"send the CSV as the body with Content-Type: text/csv, not {kind!r}")
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problem(400, "invalid_utf8", f"the CSV is not UTF-8 (byte {exc.start})")
    warnings: list[str] = []
    try:
        entries = from_csv_text(text, warnings)
    except CampaignImportError as exc:
        return _invalid(exc)
    return await _import(request, entries, warnings)
