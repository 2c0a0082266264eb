"""Webhook routes: WhatsApp Cloud API, Qontak and the original generic format."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel

from funnel_ingest import metrics
from funnel_ingest.api.deps import Problem, problem
from funnel_ingest.ingest.archive import ArchiveUnavailable
from funnel_ingest.ingest.auth import BodyCheck, NotConfigured, crm_precheck, hmac_precheck
from funnel_ingest.ingest.pipeline import Ingestor, StreamUnavailable
from funnel_ingest.ingest.providers import PayloadError
from funnel_ingest.ingest.providers.generic import GenericPayload
from funnel_ingest.ingest.providers.qontak import QontakMessage
from funnel_ingest.ingest.providers.whatsapp import WhatsAppPayload
from funnel_ingest.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])


class Accepted(BaseModel):
    """The request is durable: raw body archived and its messages on the stream."""

    status: str = "accepted"
    messages: int
    statuses: int
    dead_letters: int
    duplicates: int
    raw_key: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "Malformed JSON or not UTF-8"},
    401: {"model": Problem, "description": "Missing or malformed signature / token"},
    403: {"model": Problem, "description": "Signature or token does not match"},
    413: {"model": Problem, "description": "Body over the configured limit"},
    422: {"model": Problem, "description": "Wrong shape, missing id or timestamp"},
    503: {"model": Problem, "description": "A store is unavailable; retry later"},
}


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `#/$defs/...` reference replaced by its definition (the body models are
    not FastAPI components, so a `$ref` could not point anywhere in the OpenAPI document)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline_refs(defs[ref.removeprefix("#/$defs/")], defs),
                    **_inline_refs(rest, defs)}
        return {k: _inline_refs(v, defs) for k, v in node.items() if k != "$defs"}
    if isinstance(node, list):
        return [_inline_refs(v, defs) for v in node]
    return node


def _body_doc(model: type[BaseModel], example: Any) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": _inline_refs(schema, schema.get("$defs", {})), "example": example}}}}


# One documented body per route (the providers' documented shapes, docs/ingest.md, Sources).
_WHATSAPP_EXAMPLE = {"object": "whatsapp_business_account", "entry": [{
    "id": "102290129340398", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": "6281234567890"}],
        "messages": [{"from": "6281234567890", "id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRB",
                      "timestamp": "1749416383", "type": "text",
                      "text": {"body": "Halo kak, mau info promo"}}]}}]}]}
_QONTAK_EXAMPLE = {
    "id": "4198c4b2-d39d-45b5-ac9c-89bccb9513ec", "type": "text", "text": "helo",
    "room_id": "e658411a-99aa-417d-8c6f-40e1594554a7", "is_campaign": False,
    "sender_type": "Models::Contact", "participant_type": "customer",
    "created_at": "2021-03-03T22:53:29.000Z",
    "room": {"id": "e658411a-99aa-417d-8c6f-40e1594554a7", "channel": "wa",
             "account_uniq_id": "628117661000"}}
_GENERIC_EXAMPLE = {
    "room_id": "room-001", "channel": "ads",
    "sender": {"type": "customer", "phone": "081234567890"},
    "message": {"id": "m-1", "text": "Halo kak, mau info promo"},
    "timestamp": "2025-10-01T09:15:00+07:00"}


def _header_doc(*names: str) -> dict[str, Any]:
    """The optional string headers a route reads from `request.headers` itself, documented as
    FastAPI documents `Header()` parameters (the hot routes skip FastAPI's per-request
    parameter validation, which cost a quarter of their framework time)."""
    return {"parameters": [
        {"name": name, "in": "header", "required": False,
         "schema": {"anyOf": [{"type": "string"}, {"type": "null"}],
                    "title": "-".join(part.capitalize() for part in name.split("-"))}}
        for name in names]}


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadError("body_too_large", f"body is {declared} bytes; the limit is {limit}", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadError("body_too_large", f"body exceeds the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def _handle(request: Request, source: str, precheck: Callable[[], BodyCheck]) -> Response:
    """`precheck` checks the credentials the headers carry before any byte of the body is read
    (an unauthenticated sender never makes the server buffer a body) and returns the check of
    the body (the signature over it)."""
    settings: Settings = request.app.state.settings
    ingestor: Ingestor = request.app.state.ingestor
    start = time.perf_counter()
    metrics.RECEIVED.labels(source).inc()
    try:
        check = precheck()
        body = await read_body(request, settings.max_body_bytes)
        signature = check(body)
        outcome = await ingestor.ingest(source, body, signature)
    except PayloadError as exc:
        metrics.REJECTED.labels(source, exc.reason).inc()
        return problem(exc.status_code, exc.reason, exc.detail)
    except NotConfigured as exc:
        metrics.REJECTED.labels(source, "not_configured").inc()
        return problem(503, "not_configured", str(exc))
    except ArchiveUnavailable:
        metrics.UNAVAILABLE.labels("s3").inc()
        metrics.REJECTED.labels(source, "archive_unavailable").inc()
        return problem(503, "archive_unavailable", "the raw archive (S3) is unavailable; retry")
    except StreamUnavailable:
        metrics.UNAVAILABLE.labels("redis").inc()
        metrics.REJECTED.labels(source, "stream_unavailable").inc()
        return problem(503, "stream_unavailable", "the message stream (Redis) is unavailable; retry")
    finally:
        metrics.LATENCY.labels(source).observe(time.perf_counter() - start)
    r = outcome.result
    metrics.ACCEPTED.labels(source).inc()
    dup = outcome.appended.duplicates
    metrics.APPENDED.labels(source).inc(outcome.appended.appended)
    if dup:
        metrics.DUPLICATES.labels(source).inc(dup)
    for kind, n in (("message", len(r.messages)), ("status", len(r.statuses)),
                    ("deadletter", len(r.dead_letters))):
        if n:
            metrics.ITEMS.labels(source, kind).inc(n)
    # The `Accepted` document, serialized as JSONResponse would (same keys, order and bytes).
    return Response(orjson.dumps({
        "status": "accepted", "messages": len(r.messages), "statuses": len(r.statuses),
        "dead_letters": len(r.dead_letters), "duplicates": dup, "raw_key": outcome.raw_key}),
        media_type="application/json")


_CRM_HEADERS = _header_doc("x-webhook-token", "x-webhook-signature")


def _crm_auth(request: Request) -> Callable[[], BodyCheck]:
    s: Settings = request.app.state.settings
    headers = request.headers
    token, signature = headers.get("x-webhook-token"), headers.get("x-webhook-signature")
    return lambda: crm_precheck(token, signature, s.webhook_token.get_secret_value(),
                                s.webhook_hmac_secret.get_secret_value(),
                                s.webhook_require_signature)


@router.get("/webhooks/whatsapp", response_class=PlainTextResponse,
            summary="WhatsApp verification handshake",
            responses={
                200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                      "description": "The `hub.challenge` echoed"},
                403: {"description": "Wrong verify token", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
                422: {"description": "A query parameter is too long", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}},
            })
async def whatsapp_verify(
    request: Request,
    mode: Annotated[str | None, Query(alias="hub.mode")] = None,
    token: Annotated[str | None, Query(alias="hub.verify_token")] = None,
    challenge: Annotated[str | None, Query(alias="hub.challenge", max_length=256)] = None,
):
    """Meta calls this once when the webhook is configured: echo `hub.challenge` when
    `hub.mode=subscribe` and `hub.verify_token` equals `WHATSAPP_VERIFY_TOKEN`."""
    expected = request.app.state.settings.whatsapp_verify_token.get_secret_value()
    if (mode == "subscribe" and expected and token is not None and challenge is not None
            and hmac.compare_digest(token.encode(), expected.encode())):
        return PlainTextResponse(challenge)
    metrics.REJECTED.labels("whatsapp", "bad_verify_token").inc()
    return problem(403, "bad_verify_token",
                   "hub.mode must be subscribe and hub.verify_token must match")


@router.post("/webhooks/whatsapp", response_model=Accepted, responses=_ERRORS,
             summary="WhatsApp Cloud API notifications",
             openapi_extra={**_body_doc(WhatsAppPayload, _WHATSAPP_EXAMPLE),
                            **_header_doc("x-hub-signature-256")})
async def whatsapp_webhook(request: Request):
    """Messages, statuses and echoes of a WhatsApp Business Account, signed by Meta with
    `X-Hub-Signature-256: sha256=<HMAC-SHA256(body, WHATSAPP_APP_SECRET)>`."""
    secret = request.app.state.settings.whatsapp_app_secret.get_secret_value()
    x_hub_signature_256 = request.headers.get("x-hub-signature-256")

    def precheck() -> BodyCheck:
        if not secret:
            raise NotConfigured("set WHATSAPP_APP_SECRET to accept WhatsApp webhooks")
        return hmac_precheck(x_hub_signature_256, secret)

    return await _handle(request, "whatsapp", precheck)


@router.post("/webhooks/qontak", response_model=Accepted, responses=_ERRORS,
             summary="Qontak omnichannel message interactions",
             openapi_extra={**_body_doc(QontakMessage, _QONTAK_EXAMPLE), **_CRM_HEADERS})
async def qontak_webhook(request: Request):
    """Customer, agent and bot messages of Qontak rooms. Authenticated by `X-Webhook-Token`
    or `X-Webhook-Signature: sha256=<HMAC-SHA256(body, WEBHOOK_HMAC_SECRET)>`."""
    return await _handle(request, "qontak", _crm_auth(request))


@router.post("/webhook", response_model=Accepted, responses=_ERRORS,
             summary="Generic CRM webhook (the original format)",
             openapi_extra={**_body_doc(GenericPayload, _GENERIC_EXAMPLE), **_CRM_HEADERS})
async def generic_webhook(request: Request):
    """One message or an array of messages in the original generic format. Authenticated like
    the Qontak route."""
    return await _handle(request, "generic", _crm_auth(request))
