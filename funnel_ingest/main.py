"""The ingest service: `uvicorn funnel_ingest.main:app`."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack, asynccontextmanager

import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from . import db, keywords_api, ops, report_api, s3, webhooks
from .archive import RawArchive
from .ingest import Ingestor
from .settings import Settings, get_settings
from .stream import StreamWriter

log = logging.getLogger("funnel_ingest")


def create_app(settings: Settings | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        cfg = settings or get_settings()
        logging.basicConfig(level=cfg.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s %(message)s")
        try:  # ingest does not need Postgres: start anyway, /readyz reports it
            await asyncio.to_thread(db.migrate, cfg.database_url)
        except Exception as exc:
            log.warning("migrations not applied at start-up (Postgres unavailable?): %s", exc)
        async with AsyncExitStack() as stack:
            redis_client = aioredis.from_url(
                cfg.redis_url, socket_timeout=5, socket_connect_timeout=2,
                health_check_interval=30, max_connections=256)
            stack.push_async_callback(redis_client.aclose)
            s3_client = await stack.enter_async_context(s3.async_client(cfg))
            archive = RawArchive(s3_client, cfg.raw_bucket, linger_ms=cfg.archive_batch_ms,
                                 max_batch=cfg.archive_batch_max,
                                 writers_per_source=cfg.archive_writers)
            await archive.start()
            stack.push_async_callback(archive.stop)
            app.state.settings = cfg
            app.state.redis = redis_client
            app.state.s3 = s3_client
            app.state.ingestor = Ingestor(archive, StreamWriter(redis_client, cfg))
            yield

    app = FastAPI(
        title="Funnel Message ingest",
        version="0.1.0",
        summary="Chat webhooks to a durable raw archive and a Redis Stream.",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ()))
        return JSONResponse({"error": "invalid_request", "detail": f"{loc}: {err.get('msg')}"},
                            status_code=422)

    app.include_router(webhooks.router)
    app.include_router(ops.router)
    app.include_router(keywords_api.router)
    app.include_router(report_api.router)
    return app


app = create_app()
