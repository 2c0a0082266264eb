"""Keyword impact preview: what publishing a candidate keyword list would change in the funnel,
computed from the stored messages without writing anything (docs/funnel.md, "Previewing a
change").

Over the stored messages of a recent window (the last `days` business days, today included):
1. every message of the window is classified with the current version and with the candidate,
   by the engine's own `Classifier`; a message *changes* when any part of its classification
   does (stages, keywords hit, opening keyword and channel, payment, amount, requested date);
2. the customers of the changed messages are recomputed in memory, twice, by
   `engine.cycles.customer_funnel` over all their stored messages: with the window's changed
   messages classified by the current version, then by the candidate (every other message as
   stored, the same both times);
3. the leads that open in the window are counted per channel: leads, bookings (a paid lead
   counts as booked, as in the report), transactions and the first payments' value. `before`
   is the stored funnel, what the report shows today; `after` is `before` plus the difference
   between the two recomputes. The difference so isolates the keyword change even when some
   stored messages were classified by an older version (`stale_messages` counts them; a
   backfill would also apply the current version to those).

It only reads, in one REPEATABLE READ READ ONLY transaction (one consistent snapshot): no temp
table, no lock a drain or a backfill waits for, nothing in Redis. Its cost is reading and
classifying the window's messages (each distinct text once per version, the classifier's
cache), then reading and recomputing the affected customers.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import psycopg

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.cycles import (
    DEFAULT_RULES,
    CycleMessage,
    CycleRules,
    Lead,
    customer_funnel,
)
from funnel_ingest.engine.keywords import KeywordSet, emptied_stages
from funnel_ingest.engine.model import STAGES, Classification
from funnel_ingest.store.funnel import customer_messages
from funnel_ingest.store.keywords import current_version

if TYPE_CHECKING:
    from funnel_ingest.settings import Settings

DEFAULT_DAYS = 30
MAX_DAYS = 366
EXAMPLES = 5
EXCERPT_CHARS = 100

_WINDOW_COPY = """COPY (SELECT id, customer_key, text, direction, sent_at, keyword_version
                         FROM classified_messages WHERE message_date BETWEEN %s AND %s)
                  TO STDOUT (FORMAT BINARY)"""
_WINDOW_TYPES = ("bigint", "text", "text", "text", "timestamptz", "text")
_STORED_COUNTS = """
    SELECT channel, count(*),
           count(*) FILTER (WHERE booking_at IS NOT NULL OR transaction_at IS NOT NULL),
           count(transaction_at), coalesce(sum(transaction_value), 0)
      FROM funnel WHERE leads_date BETWEEN %s AND %s GROUP BY channel"""


@dataclass(slots=True)
class Counts:
    """Leads opened in the window, how many booked (or paid), paid, and the first payments'
    value (integer Rupiah)."""

    leads: int = 0
    bookings: int = 0
    transactions: int = 0
    value: Decimal = Decimal(0)

    def add(self, other: Counts, sign: int = 1) -> None:
        self.leads += sign * other.leads
        self.bookings += sign * other.bookings
        self.transactions += sign * other.transactions
        self.value += sign * other.value

    def minus(self, other: Counts) -> Counts:
        out = Counts()
        out.add(self)
        out.add(other, -1)
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"leads": self.leads, "bookings": self.bookings,
                "transactions": self.transactions, "value": int(self.value)}


@dataclass(slots=True)
class ChannelImpact:
    channel: str
    before: Counts
    after: Counts

    @property
    def change(self) -> Counts:
        return self.after.minus(self.before)

    def as_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "before": self.before.as_dict(),
                "after": self.after.as_dict(), "change": self.change.as_dict()}


@dataclass(frozen=True, slots=True)
class Example:
    """Changed messages of one text (and direction), with the stages before -> after."""

    excerpt: str
    direction: str
    messages: int
    stages_before: tuple[str, ...]
    stages_after: tuple[str, ...]
    keywords_before: tuple[str, ...]
    keywords_after: tuple[str, ...]
    channel_before: str | None
    channel_after: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"excerpt": self.excerpt, "direction": self.direction, "messages": self.messages,
                "stages_before": list(self.stages_before),
                "stages_after": list(self.stages_after),
                "keywords_before": list(self.keywords_before),
                "keywords_after": list(self.keywords_after),
                "channel_before": self.channel_before, "channel_after": self.channel_after}


@dataclass(slots=True)
class Impact:
    """The preview's report (module docstring). `stages`: per stage, the window's messages
    that carry it with the current version and with the candidate."""

    current_version: str | None
    candidate_version: str
    start: date
    end: date
    days: int
    messages: int = 0
    changed_messages: int = 0
    customers: int = 0
    leads_changed: int = 0
    stages: dict[str, tuple[int, int]] = field(default_factory=dict)
    channels: list[ChannelImpact] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    emptied_stages: list[str] = field(default_factory=list)
    stale_messages: int = 0
    seconds: float = 0.0
    step_seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> ChannelImpact:
        before, after = Counts(), Counts()
        for ch in self.channels:
            before.add(ch.before)
            after.add(ch.after)
        return ChannelImpact("total", before, after)

    def as_dict(self) -> dict[str, Any]:
        return {
            "current_version": self.current_version,
            "candidate_version": self.candidate_version,
            "window": {"start": self.start.isoformat(), "end": self.end.isoformat(),
                       "days": self.days},
            "messages": self.messages, "changed_messages": self.changed_messages,
            "customers_recomputed": self.customers, "leads_changed": self.leads_changed,
            "stages": [{"stage": s, "before": b, "after": a, "change": a - b}
                       for s, (b, a) in self.stages.items()],
            "channels": [c.as_dict() for c in self.channels],
            "total": self.total.as_dict(),
            "examples": [e.as_dict() for e in self.examples],
            "emptied_stages": self.emptied_stages,
            "needs_force": bool(self.emptied_stages),
            "stale_messages": self.stale_messages,
            "seconds": round(self.seconds, 3),
            "step_seconds": {k: round(v, 3) for k, v in self.step_seconds.items()},
        }


_NONE = KeywordSet((), "", "none", datetime(1970, 1, 1))
"""The list before anything was published: nothing matches."""
_CLASSIFIERS: dict[tuple[str, str], Classifier] = {}
_CLASSIFIERS_LOCK = threading.Lock()  # the API previews in worker threads
_KEPT_CLASSIFIERS = 4


def _classifier(kset: KeywordSet, tz: ZoneInfo) -> Classifier:
    """The classifier of a version, kept for the next previews in this process (the API's): its
    matcher costs about half a second to build, and its cache of classified texts makes the
    current version's side of the next preview nearly free. A version is its content's hash, so
    a kept classifier is never stale."""
    key = (kset.version, str(tz))
    with _CLASSIFIERS_LOCK:
        clf = _CLASSIFIERS.get(key)
    if clf is None:
        clf = Classifier(list(kset.keywords), kset.version, tz)
        with _CLASSIFIERS_LOCK:
            while len(_CLASSIFIERS) >= _KEPT_CLASSIFIERS:
                _CLASSIFIERS.pop(next(iter(_CLASSIFIERS)))
            clf = _CLASSIFIERS.setdefault(key, clf)
    return clf


def window(tz: ZoneInfo, days: int, today: date | None = None) -> tuple[date, date]:
    """The last `days` business dates in `tz`, today included."""
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    end = today or datetime.now(tz).date()
    return end - timedelta(days=days - 1), end


def _meaning(c: Classification) -> tuple:
    """What a classification says, without the version that said it."""
    return (c.stages, c.keywords, c.opening_keyword, c.opening_channel, c.payment, c.amount,
            c.requested_date)


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT_CHARS else flat[:EXCERPT_CHARS - 1] + "…"


def _window_rows(conn: psycopg.Connection, start: date, end: date) -> Iterator[tuple]:
    with conn.cursor() as cur, cur.copy(_WINDOW_COPY, (start, end)) as copy:
        copy.set_types(_WINDOW_TYPES)
        yield from copy.rows()


def _as(m: CycleMessage, c: Classification) -> CycleMessage:
    return replace(m, stages=c.stages, payment=c.payment, amount=c.amount,
                   opening_channel=c.opening_channel, opening_keyword=c.opening_keyword,
                   requested_date=c.requested_date)


def _count(leads: Iterable[Lead], tz: ZoneInfo, start: date, end: date,
           into: dict[str, Counts], sign: int) -> None:
    for ld in leads:
        if not start <= ld.lead_at.astimezone(tz).date() <= end:
            continue
        c = into.setdefault(ld.channel, Counts())
        c.add(Counts(1, int(ld.booking_at is not None or ld.transaction_at is not None),
                     int(ld.transaction_at is not None), ld.transaction_value or Decimal(0)),
              sign)


def _row(ld: Lead) -> tuple:
    return (ld.channel, ld.lead_at, ld.booking_at, ld.transaction_at, ld.transaction_value,
            ld.transaction_total, ld.transactions, ld.opening_keyword, ld.requested_date)


def preview(conn: psycopg.Connection, candidate: KeywordSet, *, tz: ZoneInfo,
            rules: CycleRules = DEFAULT_RULES, days: int = DEFAULT_DAYS,
            today: date | None = None, examples: int = EXAMPLES) -> Impact:
    """The impact of publishing `candidate` over the last `days` days (module docstring).
    `conn` must be in autocommit mode: the preview runs in its own read-only transaction."""
    start, end = window(tz, days, today)
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        current = current_version(conn)
        impact = Impact(current.version if current else None, candidate.version, start, end,
                        days, emptied_stages=emptied_stages(
                            current.keywords if current else (), candidate.keywords))
        before_clf = _classifier(current if current is not None else _NONE, tz)
        after_clf = _classifier(candidate, tz)
        changed, shown = _classify_window(conn, impact, before_clf, after_clf)
        t1 = time.perf_counter()
        delta = _recompute(conn, impact, changed, tz, rules)
        t2 = time.perf_counter()
        stored = {ch: Counts(n, b, t, v) for ch, n, b, t, v in
                  conn.execute(_STORED_COUNTS, (start, end))}
    for channel in sorted(set(stored) | set(delta)):
        before = stored.get(channel, Counts())
        after = Counts()
        after.add(before)
        after.add(delta.get(channel, Counts()))
        impact.channels.append(ChannelImpact(channel, before, after))
    # the texts that changed most often first
    impact.examples = [Example(*key[:2], n, *key[2:]) for key, n in sorted(
        shown.items(), key=lambda item: (-item[1], item[0][0], item[0][1]))[:examples]]
    impact.seconds = time.perf_counter() - t0
    impact.step_seconds = {"classify": t1 - t0, "recompute": t2 - t1,
                           "count": impact.seconds - (t2 - t0)}
    return impact


def _classify_window(conn: psycopg.Connection, impact: Impact, before: Classifier,
                     after: Classifier
                     ) -> tuple[dict[str, dict[int, tuple[Classification, Classification]]],
                                Counter]:
    """Classify the window's messages with both versions: per customer, the changed messages'
    two classifications; and the changed messages counted by excerpt for the examples."""
    changed: dict[str, dict[int, tuple[Classification, Classification]]] = {}
    shown: Counter = Counter()
    per_stage = {s: [0, 0] for s in STAGES}
    for pk, customer, text, direction, sent_at, version in _window_rows(
            conn, impact.start, impact.end):
        impact.messages += 1
        if version != before.version:
            impact.stale_messages += 1
        b = before.classify(text, direction, sent_at)
        a = after.classify(text, direction, sent_at)
        for s in b.stages:
            per_stage[s][0] += 1
        for s in a.stages:
            per_stage[s][1] += 1
        if _meaning(b) == _meaning(a):
            continue
        impact.changed_messages += 1
        if customer is not None:
            changed.setdefault(customer, {})[pk] = (b, a)
        shown[(_excerpt(text or ""), direction, b.stages, a.stages, b.keywords, a.keywords,
               b.opening_channel, a.opening_channel)] += 1
    impact.stages = {s: (n[0], n[1]) for s, n in per_stage.items()}
    return changed, shown


def _recompute(conn: psycopg.Connection, impact: Impact,
               changed: dict[str, dict[int, tuple[Classification, Classification]]],
               tz: ZoneInfo, rules: CycleRules) -> dict[str, Counts]:
    """The affected customers' funnels recomputed with each version: the difference of their
    counts per channel (after - before)."""
    delta: dict[str, Counts] = {}
    start, end = impact.start, impact.end
    for key, msgs in customer_messages(conn, sorted(changed)):
        mine = changed[key]
        before = customer_funnel(key, [_as(m, mine[m.pk][0]) if m.pk in mine else m
                                       for m in msgs], rules).leads
        after = customer_funnel(key, [_as(m, mine[m.pk][1]) if m.pk in mine else m
                                      for m in msgs], rules).leads
        impact.customers += 1
        _count(before, tz, start, end, delta, -1)
        _count(after, tz, start, end, delta, 1)
        rows_before = {ld.lead_id: _row(ld) for ld in before
                       if start <= ld.lead_at.astimezone(tz).date() <= end}
        rows_after = {ld.lead_id: _row(ld) for ld in after
                      if start <= ld.lead_at.astimezone(tz).date() <= end}
        impact.leads_changed += sum(1 for lead in rows_before.keys() | rows_after.keys()
                                    if rows_before.get(lead) != rows_after.get(lead))
    return delta


def preview_with(settings: Settings, candidate: KeywordSet, *, days: int = DEFAULT_DAYS,
                 today: date | None = None) -> Impact:
    """`preview` on the configured database, time zone and lead-cycle rules."""
    with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
        return preview(conn, candidate, tz=settings.tz, rules=settings.cycle_rules, days=days,
                       today=today)
