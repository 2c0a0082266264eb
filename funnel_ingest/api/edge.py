"""Limits on request bodies, in the app, for what the HTTP server does not bound.

The server (granian, started by `funnel api`) bounds the protocol: header bytes and count, and
how long a client may take to send its headers. Once the headers are in, two things are left
to the app, and this ASGI middleware does them for every request that carries a body:

- a deadline for the whole body (`HTTP_BODY_TIMEOUT_SECONDS`, counted from the moment the app
  gets the request): a sender trickling its body gets 408 and the connection is closed;
- a cap on bodies being read at once per worker (`HTTP_MAX_READING`): past it a request gets
  503 with `Retry-After` before a byte of its body is read, so slow senders cannot pile up
  buffers or tie up the worker's event loop.

A request without a body (GET, HEAD) is not counted and has no deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from funnel_ingest import metrics
from funnel_ingest.api.deps import problem
from funnel_ingest.settings import Settings

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTimeout(Exception):
    """Raised from `receive` when a request's body is not in by its deadline."""


def _has_body(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            return value.strip() not in (b"", b"0")
        if name == b"transfer-encoding":
            return True
    return False


def _refusal(status: int, error: str, detail: str, **headers: str):
    """The refusal in the routes' error shape, closing the connection (an ASGI app)."""
    response = problem(status, error, detail)
    response.headers.update({"connection": "close", **headers})
    return response


class BodyLimits:
    """ASGI middleware: a body deadline (408) and a per-worker cap on bodies being read (503 +
    Retry-After). `settings` is called on the first request (the app's settings are resolved
    at start-up, after the middleware is built)."""

    def __init__(self, app: Callable, settings: Callable[[], Settings]) -> None:
        self.app = app
        self._settings = settings
        self._limits: tuple[float, int, int] | None = None
        self.reading = 0

    def _get_limits(self) -> tuple[float, int, int]:
        if self._limits is None:
            cfg = self._settings()
            self._limits = (cfg.http_body_timeout_seconds, cfg.http_max_reading,
                            cfg.http_retry_after_seconds)
        return self._limits

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        timeout, cap, retry_after = self._get_limits()
        if self.reading >= cap:
            metrics.EDGE_REFUSED.labels("busy").inc()
            await _refusal(503, "busy", f"{cap} request bodies are being read by this worker; "
                           "retry", **{"retry-after": str(retry_after)})(scope, receive, send)
            return
        self.reading += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        reading, timed_out, started = True, False, False

        def release() -> None:
            nonlocal reading
            if reading:
                reading = False
                self.reading -= 1

        async def limited_receive() -> Message:
            nonlocal timed_out
            if not reading:  # the body is in: waiting for a disconnect is not bounded here
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                timed_out = True
                release()
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                release()
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if timed_out:  # the app's answer to the exception is replaced by the 408
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTimeout:
            pass
        except Exception:
            if not timed_out:
                raise
        finally:
            release()
        if timed_out:
            metrics.EDGE_REFUSED.labels("body_timeout").inc()
            if not started:
                await _refusal(408, "body_timeout", f"the request body did not arrive within "
                               f"{timeout:g} s")(scope, receive, send)
