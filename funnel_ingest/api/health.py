"""Operational routes: liveness, readiness of every store, Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from funnel_ingest import metrics
from funnel_ingest.ingest.stream import entry_age_seconds
from funnel_ingest.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


READY_CACHE_SECONDS = 2.0  # one check of the stores serves every /readyz call for this long


def _ping_pool(pool) -> None:
    """SELECT 1 on a connection of the API's pool (never a new connection per call: the
    endpoint needs no key, and Postgres' connection limit is shared with Dagster)."""
    with pool.connection(timeout=2) as conn:
        conn.execute("SELECT 1")


class Readiness:
    """The last readiness answer and when it was made; one check at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.at = float("-inf")
        self.answer: tuple[dict, int] = ({}, 503)


_READINESS = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["status", "checks"],
    "properties": {"status": {"type": "string", "enum": ["ready", "unavailable"]},
                   "checks": {"type": "object", "additionalProperties": {"type": "string"}}}}}}}


@router.get("/readyz", summary="Readiness: Postgres, Redis and S3 answer", responses={
    200: {**_READINESS, "description": "Every store answers"},
    503: {**_READINESS, "description": "A store does not answer (named in `checks`)"}})
async def readyz(request: Request) -> JSONResponse:
    """200 when every store answers, else 503 naming the ones that do not. The answer is
    cached for READY_CACHE_SECONDS and concurrent calls share one check, so a flood of calls
    costs the stores nothing more."""
    state = request.app.state
    cache: Readiness = state.readiness
    async with cache.lock:
        if time.monotonic() - cache.at >= READY_CACHE_SECONDS:
            cache.answer = await _check_stores(state)
            cache.at = time.monotonic()
        body, status = cache.answer
    return JSONResponse(body, status_code=status)


async def _check_stores(state) -> tuple[dict, int]:
    checks = {
        "postgres": asyncio.to_thread(_ping_pool, state.report_pool),
        "redis": state.redis.ping(),
        "s3": state.s3.head_bucket(Bucket=state.settings.raw_bucket),
    }
    results = await asyncio.gather(
        *(asyncio.wait_for(c, timeout=3) for c in checks.values()), return_exceptions=True)
    report = {}
    for name, res in zip(checks, results):
        report[name] = "ok" if not isinstance(res, BaseException) else f"error: {type(res).__name__}"
    ok = all(v == "ok" for v in report.values())
    return {"status": "ready" if ok else "unavailable", "checks": report}, 200 if ok else 503


async def _refresh_stream_gauges(request: Request) -> None:
    """Each stream's length and the age of its oldest entry. Entries leave a stream only once
    the drain has committed them to Postgres, so the length is the backlog and the oldest
    entry's age how far behind the funnel is."""
    s: Settings = request.app.state.settings
    r = request.app.state.redis
    streams = [*s.stream_keys(), s.status_stream, s.deadletter_stream]
    async with r.pipeline(transaction=False) as pipe:
        for key in streams:
            pipe.xlen(key)
            pipe.xrange(key, count=1)
        answers = await pipe.execute()
    now = time.time()
    for i, key in enumerate(streams):
        length, first = answers[2 * i], answers[2 * i + 1]
        metrics.STREAM_LENGTH.labels(key).set(length)
        age = entry_age_seconds(first[0][0], now) if first else 0.0
        metrics.STREAM_OLDEST_AGE.labels(key).set(age)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
          "description": "Prometheus text exposition format"}})
async def prometheus_metrics(request: Request) -> Response:
    """Counters of received/accepted/rejected webhooks, duplicates, each stream's backlog (its
    length and the age of its oldest entry), and the request latency histogram, in Prometheus text format (summed over all
    API workers when there are several)."""
    try:
        await asyncio.wait_for(_refresh_stream_gauges(request), timeout=2)
    except Exception as exc:  # metrics must answer even when Redis does not
        log.warning("stream gauges not refreshed: %s", exc)
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
