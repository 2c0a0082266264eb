"""The ingest service: `funnel api` (granian serving `funnel_ingest.main:app`)."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import AsyncExitStack, asynccontextmanager
from urllib.parse import parse_qsl, urlencode

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from funnel_ingest import db, s3
from funnel_ingest.api import campaigns, health, keywords, report, webhooks
from funnel_ingest.api.edge import BodyLimits
from funnel_ingest.ingest.archive import RawArchive
from funnel_ingest.ingest.pipeline import Ingestor
from funnel_ingest.ingest.stream import StreamWriter
from funnel_ingest.settings import Settings, get_settings

log = logging.getLogger("funnel_ingest")

# Query parameters whose values are credentials: Meta's handshake sends WHATSAPP_VERIFY_TOKEN as
# `hub.verify_token`, and a caller may wrongly put a key in the URL. Access logs show "***".
SECRET_QUERY_PARAMS = frozenset({"hub.verify_token", "key", "api_key", "apikey", "x-api-key",
                                 "token", "access_token", "secret", "signature"})


def redact_query(path: str) -> str:
    """`path?query` with the values of SECRET_QUERY_PARAMS replaced by `***`."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(k.lower() in SECRET_QUERY_PARAMS for k, _ in pairs):
        return path
    return base + "?" + urlencode(
        [(k, "***" if k.lower() in SECRET_QUERY_PARAMS else v) for k, v in pairs], safe="*")


class RedactSecrets(logging.Filter):
    """On uvicorn's access logger (the tests serve the app with uvicorn; `funnel api` runs
    granian with its access log off): its `%s` arguments hold the request path with the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
                isinstance(a, str) and "?" in a for a in record.args):
            record.args = tuple(redact_query(a) if isinstance(a, str) and "?" in a else a
                                for a in record.args)
        return True


_REDACT = RedactSecrets()


_heap_frozen = False


def _freeze_startup_heap() -> None:
    """Once per process, after start-up: move every object allocated so far (modules, the app,
    the store clients) out of the garbage collector's generations. A full collection then scans
    only what was made since, instead of a ~120,000-object heap (~50 ms with the event loop
    stopped: a latency spike every few thousand requests)."""
    global _heap_frozen
    if not _heap_frozen:
        gc.collect()
        gc.freeze()
        _heap_frozen = True


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        cfg = settings or get_settings()
        logging.basicConfig(level=cfg.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        logging.getLogger("uvicorn.access").addFilter(_REDACT)  # after uvicorn's log config
        try:  # ingest does not need Postgres: start anyway, /readyz reports it
            await asyncio.to_thread(db.migrate, cfg.database_url)
        except Exception as exc:
            log.warning("migrations not applied at start-up (Postgres unavailable?): %s", exc)
        async with AsyncExitStack() as stack:
            # Blocking pool: in a burst with more appends in flight than connections, a request
            # waits (up to 5 s) for a free connection instead of failing at once with 503
            # ("Too many connections"), as the plain pool does.
            redis_client = aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
                cfg.redis_url, socket_timeout=5, socket_connect_timeout=2,
                health_check_interval=30, max_connections=256, timeout=5))
            stack.push_async_callback(redis_client.aclose)
            s3_client = await stack.enter_async_context(s3.async_client(cfg))
            archive = RawArchive(s3_client, cfg.raw_bucket, linger_ms=cfg.archive_batch_ms,
                                 max_batch=cfg.archive_batch_max,
                                 writers_per_source=cfg.archive_writers,
                                 timeout=cfg.archive_timeout_seconds)
            await archive.start()
            stack.push_async_callback(archive.stop)
            app.state.settings = cfg
            app.state.readiness = health.Readiness()
            app.state.redis = redis_client
            app.state.s3 = s3_client
            app.state.ingestor = Ingestor(archive, StreamWriter(redis_client, cfg))
            _freeze_startup_heap()
            yield

    app = FastAPI(
        title="Funnel Message ingest",
        version="0.1.0",
        summary="Chat webhooks to a durable raw archive and a Redis Stream.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimits, settings=lambda: app.state.settings)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"error": "invalid_request", "detail": f"{loc}: {err.get('msg')}"},
                            status_code=422)

    app.include_router(webhooks.router)
    app.include_router(health.router)
    app.include_router(keywords.router)
    app.include_router(report.router)
    app.include_router(campaigns.router)
    return app


app = create_app()
