"""Meta's Conversions API for business messaging: the event each outbox row becomes, the
request that carries a batch of them, and what an answer means for the events in it.

The request (docs/conversions.md has it whole):
    POST {META_GRAPH_URL}/{META_GRAPH_VERSION}/{META_CAPI_DATASET_ID}/events
    form fields: data = a JSON array of 1 to 1,000 events; access_token; test_event_code (only
    while testing in Events Manager)
The token travels in the body, where the Graph API reads it as well as from the query string:
a URL ends up in proxies' and HTTP clients' logs, a body does not.

Meta takes a batch whole or not at all: 2xx with `events_received` when every event is valid,
else a 4xx/5xx with an `error` object and none of the batch kept. So an answer is judged for
the batch: accepted; refused (400: something in the events, which a smaller batch can tell
apart); or unavailable (no answer, 5xx, throttling, the token or the dataset refused): trying
the other events now would only meet the same answer, so the delivery stops and retries later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson

from funnel_ingest.settings import Settings

ACTION_SOURCE = "business_messaging"
MESSAGING_CHANNEL = "whatsapp"
CURRENCY = "IDR"  # the funnel's values are integer Rupiah
MAX_BATCH = 1000  # events per request Meta accepts
BODY_LIMIT = 4000  # characters of an answer kept with each event

# Graph API error codes that are about the request, not its events: throttling (4, 17, 32,
# 613, 80000-80099), a temporary or unknown failure (1, 2), the token (102, 190), permissions
# (10, 200-299), a temporarily blocked app (368).
_REQUEST_CODES = frozenset({1, 2, 4, 10, 17, 32, 102, 190, 368, 613})


def _about_the_request(code: object) -> bool:
    return isinstance(code, int) and (code in _REQUEST_CODES or 200 <= code <= 299
                                      or 80000 <= code <= 80099)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """An outbox row as the delivery claims it."""

    id: int
    event_id: str
    event_name: str
    event_time: datetime
    ctwa_clid: str
    value: Decimal | None


def event(row: OutboxEvent, business_account_id: str) -> dict[str, Any]:
    """The event Meta documents for a Click-to-WhatsApp conversion: its name, time (Unix
    seconds, UTC), id (Meta keeps one event per id and name), the business-messaging source on
    WhatsApp, the business account and the ad click id; a Purchase also carries its value."""
    out: dict[str, Any] = {
        "event_name": row.event_name,
        "event_time": int(row.event_time.timestamp()),
        "event_id": row.event_id,
        "action_source": ACTION_SOURCE,
        "messaging_channel": MESSAGING_CHANNEL,
        "user_data": {"whatsapp_business_account_id": business_account_id,
                      "ctwa_clid": row.ctwa_clid},
    }
    if row.event_name == "Purchase" and row.value is not None:
        out["custom_data"] = {"currency": CURRENCY, "value": int(row.value)}
    return out


class Verdict(enum.Enum):
    ACCEPTED = "accepted"        # Meta kept every event of the batch
    REFUSED = "refused"          # 400 about the events: a smaller batch can tell them apart
    UNAVAILABLE = "unavailable"  # no answer, or one about the request: stop, retry later


@dataclass(frozen=True, slots=True)
class Answer:
    verdict: Verdict
    status: int | None   # HTTP status; None when no answer came
    body: str | None     # Meta's answer, trimmed to BODY_LIMIT
    error: str | None    # what went wrong, in one line (None when accepted)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def judge(status: int, body: bytes) -> Answer:
    """What Meta's answer (`status`, `body`) means for the batch it answers."""
    text = body.decode("utf-8", "replace")[:BODY_LIMIT]
    if 200 <= status < 300:
        return Answer(Verdict.ACCEPTED, status, text, None)
    try:
        error = orjson.loads(body).get("error") or {}
    except (orjson.JSONDecodeError, AttributeError):
        error = {}
    if not isinstance(error, dict):
        error = {}
    code, subcode = error.get("code"), error.get("error_subcode")
    detail = _one_line(error.get("error_user_msg") or error.get("message") or text[:200])
    codes = f" (code {code}" + (f", subcode {subcode}" if subcode else "") + ")" if code else ""
    line = f"HTTP {status}: {detail}{codes}"
    refused = status == 400 and not error.get("is_transient") and not _about_the_request(code)
    return Answer(Verdict.REFUSED if refused else Verdict.UNAVAILABLE, status, text, line)


class MetaClient:
    """Posts batches of events to the dataset of `settings` (an httpx client of its own unless
    one is given)."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None) -> None:
        self.url = (f"{settings.meta_graph_url.rstrip('/')}/{settings.meta_graph_version}/"
                    f"{settings.meta_capi_dataset_id}/events")
        self._token = settings.meta_capi_access_token
        self._test_code = settings.meta_capi_test_event_code
        self._timeout = settings.conversions_timeout_seconds
        self._own = http is None
        self._http = http or httpx.Client(timeout=self._timeout, follow_redirects=False)

    def post(self, events: list[dict[str, Any]]) -> Answer:
        """One request carrying `events` (at most MAX_BATCH); never raises for what the network
        or Meta does: a failure is an Answer."""
        form = {"data": orjson.dumps(events).decode(),
                "access_token": self._token.get_secret_value()}
        if self._test_code:
            form["test_event_code"] = self._test_code
        try:
            res = self._http.post(self.url, data=form, timeout=self._timeout)
        except httpx.TimeoutException:
            return Answer(Verdict.UNAVAILABLE, None, None,
                          f"no answer within {self._timeout:g} s")
        except httpx.HTTPError as exc:  # refused, reset, DNS: the message names no secret
            return Answer(Verdict.UNAVAILABLE, None, None,
                          f"no answer: {type(exc).__name__}: {_one_line(exc)}"[:BODY_LIMIT])
        return judge(res.status_code, res.content)

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> MetaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
