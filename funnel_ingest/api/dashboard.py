"""The funnel dashboard: one page (`GET /dashboard`) with the step funnel (by channel or
another dimension), conversion by channel and over time (per day or week, young cohorts
marked), the time to convert, the change against the period before, and the selected leads
page by page with their CSV. It is drawn in the browser by the vendored Chart.js
(`static/vendor/`, served here: nothing is fetched from elsewhere) from the `/funnel-report`
routes; `/dashboard/settings` gives it today's date in FUNNEL_TIMEZONE.

The page itself holds no data and needs no key. The API key is typed into the page's prompt
(or handed over as a URL fragment, `/dashboard#key=...`, which browsers never send to a
server), kept in the tab's sessionStorage and sent only as the `X-API-Key` header of the
page's own requests. A `?key=` query parameter would end up in access logs, proxy logs and
browser history; the fragment and the header do not. A strict Content-Security-Policy (scripts
and styles from this origin only, no inline code) keeps injected markup from reading it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from funnel_ingest.engine.dates import local_date

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

router = APIRouter(tags=["dashboard"])


@router.get("/dashboard", response_class=FileResponse, summary="The funnel dashboard (HTML)",
            responses={200: {"content": {"text/html": {}}}})
async def dashboard_page() -> Response:
    """Conversion by channel and over time, for a date range and channels chosen on the page.
    Asks for the API key (or reads it from the `#key=` fragment)."""
    return FileResponse(STATIC_DIR / "dashboard.html", media_type=_TYPES[".html"], headers={
        "Content-Security-Policy": CSP, "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


class DashboardSettings(BaseModel):
    timezone: str = Field(description="FUNNEL_TIMEZONE: the zone of every lead date")
    today: date = Field(description="today's date in FUNNEL_TIMEZONE (the default end of the "
                                    "dashboard's range: the browser's own date can be a day "
                                    "behind or ahead)")


@router.get("/dashboard/settings", response_model=DashboardSettings,
            summary="The dashboard's time zone and today's business date")
async def dashboard_settings(request: Request) -> DashboardSettings:
    """What the page needs before its first query; no data, so no key. Between 00:00 and 07:00
    in Jakarta the UTC date is still yesterday: today's leads would be left out of a range
    ending on the browser's UTC date."""
    settings = request.app.state.settings
    return DashboardSettings(timezone=settings.funnel_timezone,
                             today=local_date(datetime.now(UTC), settings.tz))


@router.get("/static/{name:path}", include_in_schema=False)
async def static_file(name: Annotated[str, PathParam()]) -> Response:
    """The dashboard's script, style sheet and vendored chart library."""
    try:
        path = (STATIC_DIR / name).resolve()
        found = path.is_relative_to(STATIC_DIR) and path.is_file() and path.suffix in _TYPES
    except (ValueError, OSError):  # a NUL byte in the name, a name too long for the OS
        found = False
    if not found:
        return JSONResponse({"error": "not_found", "detail": f"no static file {name!r}"},
                            status_code=404)
    return FileResponse(path, media_type=_TYPES[path.suffix], headers={
        "Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})
