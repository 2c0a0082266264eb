"""A stand-in for Meta's Conversions API endpoint (graph.facebook.com cannot be reached here):
an HTTP server on a loopback port, in a thread of the test process.

It checks every request against the documented shape of the Conversions API for business
messaging (path, form fields, token, each event's fields) and refuses a request that deviates
with a 400 and the reason, which it also keeps in `violations`, so a test that expects
acceptance fails on any shape error. It keeps every request it saw (`requests`) and the events
of those it accepted (`accepted`), and answers as the test scripts it: accept (the default),
refuse the batches holding given event ids, answer a status, or stall past the client's timeout.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from funnel_ingest.local.processes import free_port

EVENT_NAMES = {"LeadSubmitted", "Schedule", "Purchase"}
EVENT_KEYS = {"event_name", "event_time", "event_id", "action_source", "messaging_channel",
              "user_data", "custom_data"}
SEVEN_DAYS = 7 * 24 * 3600


def graph_error(message: str, *, code: int = 100, status: int = 400,
                transient: bool = False) -> tuple[int, dict]:
    """An error answer as the Graph API shapes them."""
    return status, {"error": {"message": message, "type": "OAuthException", "code": code,
                              "is_transient": transient, "fbtrace_id": "AtestTrace"}}


@dataclass
class Seen:
    """One request as the server received it."""

    path: str
    query: dict[str, list[str]]
    form: dict[str, list[str]]
    events: list[dict]
    status: int = 0


@dataclass
class MetaCapiServer:
    dataset_id: str
    access_token: str
    business_account_id: str
    version: str = "v25.0"
    requests: list[Seen] = field(default_factory=list)
    accepted: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    refused_ids: set[str] = field(default_factory=set)   # batches holding one get a 400
    script: deque = field(default_factory=deque)         # next answers: (status, body) or "stall"
    stall_seconds: float = 1.5  # the tests' client gives up after 1 s
    # called with the request's events before the answer is written (and may block it)
    before_answer: Callable[[list[dict]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def graph_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> MetaCapiServer:
        self.port = free_port()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                server._handle(self)

            def log_message(self, *_args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # what the tests read
    def accepted_ids(self) -> list[str]:
        return [e["event_id"] for e in self.accepted]

    def shape_errors(self, path: str, query: dict, headers, form: dict) -> list[str]:
        """Every way the request deviates from the documented Conversions API request."""
        errors: list[str] = []
        if path != f"/{self.version}/{self.dataset_id}/events":
            errors.append(f"path {path}")
        if "access_token" in query:
            errors.append("access_token in the URL")
        if form.get("access_token") != [self.access_token]:
            errors.append("missing or wrong access_token")
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            errors.append(f"content type {headers.get('Content-Type')}")
        try:
            events = json.loads(form["data"][0])
        except (KeyError, IndexError, ValueError):
            return [*errors, "data is not a JSON array"]
        if not isinstance(events, list) or not 1 <= len(events) <= 1000:
            return [*errors, "data must hold 1 to 1000 events"]
        ids = [e.get("event_id") for e in events if isinstance(e, dict)]
        if len(set(ids)) != len(ids):
            errors.append("an event_id twice in one request")
        now = time.time()
        for e in events:
            errors += [f"{e.get('event_id')}: {err}" for err in self._event_errors(e, now)]
        return errors

    def _event_errors(self, e: object, now: float) -> list[str]:
        if not isinstance(e, dict):
            return ["not an object"]
        errors = [f"unknown field {k}" for k in set(e) - EVENT_KEYS]
        if e.get("event_name") not in EVENT_NAMES:
            errors.append(f"event_name {e.get('event_name')!r}")
        t = e.get("event_time")
        if not isinstance(t, int) or not now - SEVEN_DAYS <= t <= now + 60:
            errors.append(f"event_time {t!r} (Unix seconds within the last 7 days)")
        if not isinstance(e.get("event_id"), str) or not e["event_id"]:
            errors.append("event_id")
        if e.get("action_source") != "business_messaging":
            errors.append(f"action_source {e.get('action_source')!r}")
        if e.get("messaging_channel") != "whatsapp":
            errors.append(f"messaging_channel {e.get('messaging_channel')!r}")
        user = e.get("user_data")
        if not isinstance(user, dict) or set(user) != {"whatsapp_business_account_id",
                                                       "ctwa_clid"}:
            errors.append(f"user_data {user!r}")
        else:
            if user["whatsapp_business_account_id"] != self.business_account_id:
                errors.append("whatsapp_business_account_id")
            if not isinstance(user["ctwa_clid"], str) or not user["ctwa_clid"]:
                errors.append("ctwa_clid")
        custom = e.get("custom_data")
        if e.get("event_name") == "Purchase":
            if not isinstance(custom, dict) or custom.get("currency") != "IDR" \
                    or not isinstance(custom.get("value"), int | float) or custom["value"] <= 0:
                errors.append(f"Purchase custom_data {custom!r} (currency IDR, a value)")
        elif custom is not None:
            errors.append("custom_data on a non-purchase event")
        return errors

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0)).decode()
        form = parse_qs(body, keep_blank_values=True)
        query = parse_qs(url.query)
        errors = self.shape_errors(url.path, query, req.headers, form)
        try:
            events = json.loads(form["data"][0])
        except (KeyError, IndexError, ValueError):
            events = []
        seen = Seen(url.path, query, form, events)
        with self.lock:
            self.requests.append(seen)
            step = self.script.popleft() if self.script and not errors else None
        if errors:
            with self.lock:
                self.violations += errors
            status, answer = graph_error("; ".join(errors))
        elif step == "stall":
            time.sleep(self.stall_seconds)  # past the client's timeout: it gives up first
            status, answer = 200, {"events_received": len(events)}
        elif step is not None:
            status, answer = step
        elif refused := sorted(self.refused_ids & {e["event_id"] for e in events}):
            status, answer = graph_error(f"Invalid parameter: ctwa_clid of {refused[0]} is not "
                                         "a click of this business")
        else:
            status, answer = 200, {"events_received": len(events), "messages": [],
                                   "fbtrace_id": "AtestTrace"}
        if status == 200:
            with self.lock:
                self.accepted += events
        if self.before_answer is not None:
            self.before_answer(events)
        seen.status = status
        data = json.dumps(answer).encode()
        try:
            req.send_response(status)
            req.send_header("Content-Type", "application/json")
            req.send_header("Content-Length", str(len(data)))
            req.end_headers()
            req.wfile.write(data)
            req.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a stalled answer)
