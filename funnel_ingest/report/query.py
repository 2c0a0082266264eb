"""The funnel report: its rows (CSV via COPY, never built in memory; JSON pages by keyset), the
per-channel summary and the same summary per lead date. One implementation for the API
(`api/report.py`), the CLI (`cli/report.py`) and Dagster.

Rows are ordered by (leads_date, lead_at, lead_id): the business date, then the exact time the
lead opened, then its stable id as a tie-breaker. Keyset pages continue after the last row's
key, so a page never repeats or skips a row whatever is added to later dates meanwhile.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from itertools import accumulate
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from funnel_ingest.report.campaigns import campaign_names

# User-facing columns first, in the order the growth team asked for, then the extras; the
# lead's resolved campaign and its name last (empty name: an id no payload or import named).
REPORT_COLUMNS = (
    "leads_date", "channel", "phone", "booking_date", "transaction_date", "transaction_value",
    "medium", "lead_id", "customer_key", "cycle", "lead_at", "booking_at", "transaction_at",
    "transaction_total", "transactions", "requested_date", "campaign_id", "ad_id",
    "opening_keyword", "campaign", "campaign_name",
)
SORT_KEY = ("leads_date", "lead_at", "lead_id")
MAX_CHANNELS = 20
MAX_TEXT = 200


class FilterError(ValueError):
    """A report filter (or a page cursor) is not usable; the message says why."""


# no stored value has one (Postgres text cannot hold NUL): a client error, not the database's
# failure
_NUL = "{} must not contain NUL characters"


def _labels(values: Iterable[str], name: str) -> tuple[str, ...]:
    """A filter's labels (channels, mediums): stripped, distinct, sorted, each checked."""
    labels = tuple(sorted({v.strip() for v in values}))
    if any(not v for v in labels):
        raise FilterError(f"{name} must not be empty")
    if len(labels) > MAX_CHANNELS:
        raise FilterError(f"at most {MAX_CHANNELS} {name}s")
    if any(len(v) > MAX_TEXT for v in labels):
        raise FilterError(f"{name} longer than {MAX_TEXT} characters")
    if any("\x00" in v for v in labels):
        raise FilterError(_NUL.format(name))
    return labels


@dataclass(frozen=True)
class ReportFilter:
    """Which leads a report covers: lead dates `start`..`end` inclusive (business dates in
    FUNNEL_TIMEZONE; None = unbounded), any of `channels` (empty = all), one `campaign` (the
    lead's resolved campaign key, or its raw campaign_id), any of `mediums` (whatsapp,
    instagram, ...; empty = all)."""

    start: date | None = None
    end: date | None = None
    channels: tuple[str, ...] = ()
    campaign: str | None = None
    mediums: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise FilterError(f"start ({self.start}) is after end ({self.end})")
        object.__setattr__(self, "channels", _labels(self.channels, "channel"))
        object.__setattr__(self, "mediums",
                           _labels((m.casefold() for m in self.mediums), "medium"))
        if self.campaign is not None:
            campaign = self.campaign.strip()
            if not campaign or len(campaign) > MAX_TEXT:
                raise FilterError(f"campaign must be 1 to {MAX_TEXT} characters")
            if "\x00" in campaign:
                raise FilterError(_NUL.format("campaign"))
            object.__setattr__(self, "campaign", campaign)

    def conditions(self, *, channel: str | None = None, resolved_only: bool = False
                   ) -> sql.Composable:
        """The WHERE clause; `channel` narrows it to one of the filter's channels. The campaign
        matches a lead's resolved campaign or its raw campaign_id; with `resolved_only`, the
        resolved one only (all the report summary holds)."""
        where: list[sql.Composable] = []
        if self.start is not None:
            where.append(sql.SQL("leads_date >= {}").format(sql.Literal(self.start)))
        if self.end is not None:
            where.append(sql.SQL("leads_date <= {}").format(sql.Literal(self.end)))
        if channel is not None:
            where.append(sql.SQL("channel = {}").format(sql.Literal(channel)))
        elif self.channels:
            where.append(sql.SQL("channel = ANY({})").format(sql.Literal(list(self.channels))))
        if self.campaign is not None:
            match = (sql.SQL("campaign = {c}") if resolved_only
                     else sql.SQL("(campaign = {c} OR campaign_id = {c})"))
            where.append(match.format(c=sql.Literal(self.campaign)))
        if self.mediums:
            where.append(sql.SQL("medium = ANY({})").format(sql.Literal(list(self.mediums))))
        return sql.SQL(" AND ").join(where) if where else sql.SQL("TRUE")

    def as_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat() if self.start else None,
                "end": self.end.isoformat() if self.end else None,
                "channels": list(self.channels), "campaign": self.campaign,
                "mediums": list(self.mediums)}

    def fingerprint(self) -> str:
        """Short digest of the filter, carried in cursors so a cursor only continues its own."""
        return hashlib.sha256(orjson.dumps(self.as_dict())).hexdigest()[:12]


def configure_session(conn: psycopg.Connection) -> None:
    """Report sessions: exact timestamps in UTC (as stored), and room in memory for the
    summaries' sorts (the medians of a month and a channel sort ~100k values)."""
    conn.execute("SET TIME ZONE 'UTC'")
    conn.execute("SET work_mem = '64MB'")


# The report's text columns: values a CRM or a keyword sheet chose. In a CSV made for people, a
# cell starting with = + - @ (or a tab or carriage return) would be run as a formula by Excel,
# LibreOffice or Google Sheets (`=HYPERLINK(...)`, `+cmd|...`); such cells get OWASP's leading
# apostrophe. A phone (+62...) then opens as the text '+6281..., never as a number that lost its
# + and leading digits. Machine consumers ask for the exact values (`spreadsheet_safe=False`).
TEXT_COLUMNS = frozenset({"channel", "phone", "lead_id", "customer_key", "campaign_id", "ad_id",
                          "opening_keyword", "medium", "campaign", "campaign_name"})
_NEUTRALIZED = sql.SQL(
    "CASE WHEN left({v}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN chr(39) || {v} "
    "ELSE {v} END AS {c}")
_DERIVED = {"campaign_name": sql.SQL("named.campaign_label")}
"""Report columns that are not funnel columns: their SQL expressions (over `_ROWS`)."""
_ROWS = sql.SQL(
    "funnel LEFT JOIN (SELECT campaign AS campaign_key, name AS campaign_label FROM campaigns)"
    " AS named ON named.campaign_key = funnel.campaign")
"""The report's rows: the funnel with each lead's campaign name. Postgres reads it as the
funnel index's range in order, each name looked up by the registry's key in a nested loop whose
lookups are cached per campaign (Memoize), so the rows need no sort. Measured on the full CSV
of 1,000,000 leads (5.5 s before): 0.5 to 1.4 s more with the two columns, where a per-row
subquery took 2.2 s more. The registry's columns are renamed so that the filters' column names
stay the funnel's."""


def _column(c: str, spreadsheet_safe: bool) -> sql.Composable:
    if c in ("transaction_value", "transaction_total"):
        return sql.SQL("round({c})::bigint AS {c}").format(c=sql.Identifier(c))
    value = _DERIVED.get(c, sql.Identifier(c))
    if spreadsheet_safe and c in TEXT_COLUMNS:
        return _NEUTRALIZED.format(v=value, c=sql.Identifier(c))
    if c in _DERIVED:
        return sql.SQL("{} AS {}").format(value, sql.Identifier(c))
    return value


def _columns(spreadsheet_safe: bool = False) -> sql.Composable:
    return sql.SQL(", ").join(_column(c, spreadsheet_safe) for c in REPORT_COLUMNS)


_ORDER = sql.SQL("ORDER BY leads_date, lead_at, lead_id")


def report_query(filt: ReportFilter, *, spreadsheet_safe: bool = False) -> sql.Composed:
    """Every row of the report of `filt`, in report order."""
    return sql.SQL("SELECT {} FROM {} WHERE {} {}").format(
        _columns(spreadsheet_safe), _ROWS, filt.conditions(), _ORDER)


def csv_chunks(conn: psycopg.Connection, filt: ReportFilter, *,
               spreadsheet_safe: bool = True) -> Iterator[bytes]:
    """The report as CSV (header first), in chunks as Postgres produces them. By default the
    cells a spreadsheet would run as formulas are neutralized (TEXT_COLUMNS);
    `spreadsheet_safe=False` gives the exact values."""
    query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
        report_query(filt, spreadsheet_safe=spreadsheet_safe))
    with conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            yield bytes(chunk)


def count_rows(conn: psycopg.Connection, filt: ReportFilter) -> int:
    """How many rows the report of `filt` has."""
    return conn.execute(sql.SQL("SELECT count(*) FROM funnel WHERE {}").format(
        filt.conditions())).fetchone()[0]


# ---------------------------------------------------------------------------------------------
# Keyset pages


@dataclass(frozen=True)
class PageKey:
    """The sort key of a row: where the next page starts (after it)."""

    leads_date: date
    lead_at: datetime
    lead_id: str

    def encode(self, filt: ReportFilter) -> str:
        """An opaque cursor token (URL-safe) bound to `filt`."""
        raw = orjson.dumps([self.leads_date.isoformat(), self.lead_at.isoformat(), self.lead_id,
                            filt.fingerprint()])
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    @classmethod
    def decode(cls, token: str, filt: ReportFilter) -> PageKey:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            day, at, lead_id, fingerprint = orjson.loads(raw)
            key = cls(date.fromisoformat(day), datetime.fromisoformat(at), str(lead_id))
        except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
            raise FilterError("cursor is not a cursor this API issued") from None
        if key.lead_at.tzinfo is None:
            raise FilterError("cursor is not a cursor this API issued")
        if fingerprint != filt.fingerprint():
            raise FilterError("cursor belongs to other filters: repeat the first request's "
                              "start, end, channel and campaign with it")
        return key


def page(conn: psycopg.Connection, filt: ReportFilter, limit: int,
         after: PageKey | None = None) -> tuple[list[dict[str, Any]], PageKey | None]:
    """Up to `limit` rows after `after` in report order, and the key to continue from (None on
    the last page). With several channels, each channel's rows are read from its own index
    range and merged, so a page costs about `limit` index entries per channel."""
    keyset = (sql.SQL("(leads_date, lead_at, lead_id) > ({}, {}, {})").format(
        sql.Literal(after.leads_date), sql.Literal(after.lead_at), sql.Literal(after.lead_id))
        if after else sql.SQL("TRUE"))
    one = sql.SQL("SELECT {cols} FROM {rows} WHERE {where} AND {keyset} {order} LIMIT {n}")
    n = sql.Literal(limit + 1)
    if len(filt.channels) > 1:
        parts = [sql.SQL("({})").format(one.format(
            cols=_columns(), rows=_ROWS, where=filt.conditions(channel=c), keyset=keyset,
            order=_ORDER, n=n))
            for c in filt.channels]
        query = sql.SQL("SELECT * FROM ({}) AS u {} LIMIT {}").format(
            sql.SQL(" UNION ALL ").join(parts), _ORDER, n)
    else:
        query = one.format(cols=_columns(), rows=_ROWS, where=filt.conditions(), keyset=keyset,
                           order=_ORDER, n=n)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(query).fetchall()
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    last = rows[-1]
    return rows, PageKey(last["leads_date"], last["lead_at"], last["lead_id"])


# ---------------------------------------------------------------------------------------------
# Summaries
#
# Read from the report summary (sql/009_report_summary.sql), never from the leads: per lead date,
# channel, medium, campaign, ad and opening keyword, the counts and sums of the leads and the
# histograms of their times to convert, maintained with the funnel in its own transactions. A
# group may be split over several summary rows until they are compacted, so every read sums.
#
# A paid lead has reached the booking stage even when no message said "booking" (its booking
# date stays empty: the columns hold what was said), so the stage counts and the conversion
# rates never rise from one stage to the next. Stage times are seconds from the lead's first
# message (lead_at) to the booking / transaction, over the leads with an observed booking /
# transaction. Medians and p90 are continuous (interpolated between the two ranks around
# them, as percentile_cont) with each rank's value read as the mean of its histogram bucket:
# exact when the leads of a bucket took the same time, else within the bucket's width
# (TIME_PRECISION).

TIME_PRECISION = 2 ** (1 / 16) - 1
"""The largest relative error of a median / p90 read from the histograms (buckets grow by
2^(1/16) from 1 second; below 1 second the error is under 1 second)."""

_SUMS = ("leads", "bookings", "transactions", "valued", "revenue_sum", "payments_sum")
_STAGE_TIMES = {"booking": "booking_seconds", "transaction": "transaction_seconds"}


@dataclass
class StageSummary:
    """Funnel figures of a group of leads (a channel, a day and channel, or all of them)."""

    leads: int
    bookings: int
    transactions: int
    revenue_sum: int
    revenue_average: int | None
    payments_sum: int
    booking_seconds: list[float] | None = field(default=None, repr=False)
    transaction_seconds: list[float] | None = field(default=None, repr=False)

    @staticmethod
    def _rate(num: int, den: int) -> float | None:
        return round(num / den, 6) if den else None

    @staticmethod
    def _times(pcts: list[float] | None) -> dict[str, float | None]:
        if not pcts:
            return {"median": None, "p90": None}
        return {"median": round(pcts[0], 3), "p90": round(pcts[1], 3)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads, "bookings": self.bookings, "transactions": self.transactions,
            "conversion": {
                "lead_to_booking": self._rate(self.bookings, self.leads),
                "booking_to_transaction": self._rate(self.transactions, self.bookings),
                "lead_to_transaction": self._rate(self.transactions, self.leads)},
            "revenue": {"sum": self.revenue_sum, "average": self.revenue_average,
                        "payments_sum": self.payments_sum},
            "lead_to_booking_seconds": self._times(self.booking_seconds),
            "lead_to_transaction_seconds": self._times(self.transaction_seconds),
        }


EMPTY = StageSummary(0, 0, 0, 0, None, 0)


class _Group:
    """The sums and time histograms of one group, as read (and added up) from the summary."""

    __slots__ = ("sums", "times")

    def __init__(self) -> None:
        self.sums = [0] * len(_SUMS)
        self.times: dict[str, dict[int, list]] = {"booking": {}, "transaction": {}}

    def add_sums(self, values: Iterable) -> None:
        self.sums = [a + b for a, b in zip(self.sums, values, strict=True)]

    def add_times(self, stage: str, buckets: list[int], leads: list[int],
                  milliseconds: list[int]) -> None:
        """Add a histogram: per bucket, its leads and the sum of their times."""
        times = self.times[stage]
        if not times:
            self.times[stage] = dict(zip(buckets, zip(leads, milliseconds, strict=True),
                                         strict=True))
            return
        for bucket, n, ms in zip(buckets, leads, milliseconds, strict=True):
            have = times.get(bucket, (0, 0))
            times[bucket] = (have[0] + n, have[1] + ms)

    def merge(self, other: _Group) -> None:
        self.add_sums(other.sums)
        for stage, cells in other.times.items():
            if cells:
                buckets, pairs = zip(*cells.items(), strict=True)
                leads, ms = zip(*pairs, strict=True)
                self.add_times(stage, list(buckets), list(leads), list(ms))

    def stage(self) -> StageSummary:
        leads, bookings, transactions, valued, revenue, payments = self.sums
        average = (int((Decimal(revenue) / valued).quantize(Decimal(1), ROUND_HALF_UP))
                   if valued else None)
        return StageSummary(int(leads), int(bookings), int(transactions), int(revenue), average,
                            int(payments), *(percentiles(self.times[s]) for s in _STAGE_TIMES))


def percentiles(histogram: dict[int, tuple[int, int]], ps: tuple[float, ...] = (0.5, 0.9)
                ) -> list[float] | None:
    """`ps` (seconds) of the times in `histogram` ({bucket: (leads, milliseconds)}),
    continuous as percentile_cont: the value at rank p * (n - 1) interpolated between the ranks
    around it, a rank's value being its bucket's mean. None when it holds no lead."""
    cells = [cell for _, cell in sorted(histogram.items()) if cell[0] > 0]
    if not cells:
        return None
    ends = list(accumulate(n for n, _ in cells))  # the rank after each bucket's last

    def value(rank: int) -> float:
        n, ms = cells[min(bisect_right(ends, rank), len(cells) - 1)]
        return ms / n / 1000

    out = []
    for p in ps:
        rank = p * (ends[-1] - 1)
        low = math.floor(rank)
        frac = rank - low
        v = value(low)
        out.append(v + frac * (value(low + 1) - v) if frac else v)
    return out


def _summary_where(filt: ReportFilter) -> sql.Composable:
    return filt.conditions(resolved_only=True)


_CHANNEL_GRAIN = frozenset({"leads_date", "channel", "medium"})


def _times(filt: ReportFilter, columns: tuple[str, ...]) -> sql.Composable:
    """A query of the histogram rows of `filt`'s leads (stage, bucket, leads, milliseconds and
    `columns`). The histograms per channel and medium when they hold what the filter and the
    grouping need (far fewer rows), else the ones per campaign, ad and opening keyword too;
    unless the grouping is per day, the weekly ones for the whole weeks (Monday to Sunday) of
    the range and the daily ones for its days outside them."""
    picked = sql.SQL(", ").join(map(sql.Identifier, (*columns, "stage", "bucket", "leads",
                                                     "milliseconds")))
    coarse = filt.campaign is None and _CHANNEL_GRAIN.issuperset(columns)
    daily_table, weekly_table = (
        ("funnel_summary_channel_times", "funnel_summary_channel_week_times") if coarse
        else ("funnel_summary_times", "funnel_summary_week_times"))

    def days(part: ReportFilter) -> sql.Composable:
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            picked, sql.Identifier(daily_table), _summary_where(part))

    try:
        first = filt.start and filt.start + timedelta(days=-filt.start.weekday() % 7)  # Monday
        last = filt.end and filt.end - timedelta(days=(filt.end.weekday() + 1) % 7)  # Sunday
        last_week = last and last - timedelta(days=6)  # the Monday of the last whole week
    except OverflowError:  # a range at the calendar's ends (year 1 or 9999): no whole week
        return days(filt)
    if "leads_date" in columns or (first is not None and last is not None and last < first):
        return days(filt)  # per day, or no whole week in the range
    weeks = [_summary_where(replace(filt, start=None, end=None))]
    if first is not None:
        weeks.append(sql.SQL("week >= {}").format(sql.Literal(first)))
    if last is not None:
        weeks.append(sql.SQL("week <= {}").format(sql.Literal(last_week)))
    parts = [sql.SQL("SELECT {} FROM {} WHERE {}").format(
        picked, sql.Identifier(weekly_table), sql.SQL(" AND ").join(weeks))]
    if filt.start is not None and first > filt.start:
        parts.append(days(replace(filt, end=first - timedelta(days=1))))
    if filt.end is not None and last < filt.end:
        parts.append(days(replace(filt, start=last + timedelta(days=1))))
    return sql.SQL(" UNION ALL ").join(parts)


def _groups(conn: psycopg.Connection, filt: ReportFilter, columns: tuple[str, ...], *,
            times: bool = True) -> dict[tuple, _Group]:
    """The summary of `filt`'s leads per value of `columns` (summary columns), with their
    time histograms unless `times` is false."""
    cols = sql.SQL(", ").join(map(sql.Identifier, columns)) if columns else sql.SQL("")
    lead = sql.SQL("{}, ").format(cols) if columns else sql.SQL("")
    group_by = sql.SQL("GROUP BY {}").format(cols) if columns else sql.SQL("")
    where = _summary_where(filt)
    n = len(columns)
    groups: dict[tuple, _Group] = {}
    sums = sql.SQL(", ").join(sql.SQL("sum({})::bigint").format(sql.Identifier(c))
                              for c in _SUMS)
    for row in conn.execute(sql.SQL(
            "SELECT {lead}{sums} FROM funnel_summary WHERE {where} {group_by} "
            "HAVING sum(leads) <> 0").format(lead=lead, sums=sums, where=where,
                                             group_by=group_by)):
        groups.setdefault(row[:n], _Group()).add_sums(row[n:])
    if not times:
        return groups
    # per group and stage, its histogram as three arrays (bucket order): one row per group
    inner_by = sql.SQL("GROUP BY {}stage, bucket").format(lead)
    outer_by = sql.SQL("GROUP BY {}stage").format(lead)
    for row in conn.execute(sql.SQL(
            "SELECT {lead}stage, array_agg(bucket ORDER BY bucket), array_agg(n ORDER BY bucket), "
            "array_agg(ms ORDER BY bucket) FROM (SELECT {lead}stage, bucket, "
            "sum(leads) AS n, sum(milliseconds) AS ms FROM ({rows}) AS t "
            "{inner_by} HAVING sum(leads) <> 0) AS h {outer_by}").format(
                lead=lead, rows=_times(filt, columns), inner_by=inner_by, outer_by=outer_by)):
        group = groups.get(row[:n])
        if group is not None:
            group.add_times(*row[n:])
    return groups


def _total(groups: Iterable[_Group]) -> _Group:
    total = _Group()
    for g in groups:
        total.merge(g)
    return total


def channel_counts(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Leads, bookings, transactions and revenue per channel over the whole funnel, in channel
    order: the cheap part of `summary` (no times), for what runs after every drain (the Dagster
    funnel metadata) and the demo's closing table."""
    rows = conn.execute(
        "SELECT channel, sum(leads), sum(bookings), sum(transactions), sum(revenue_sum) "
        "FROM funnel_summary GROUP BY 1 HAVING sum(leads) <> 0 ORDER BY 1").fetchall()
    return [{"channel": c, "leads": int(n), "bookings": int(b), "transactions": int(t),
             "revenue": int(v)} for c, n, b, t, v in rows]


def summary(conn: psycopg.Connection, filt: ReportFilter) -> dict[str, Any]:
    """Per channel (`by_channel`, by channel name) and over all of the filter's leads (`total`).
    A filter on one channel has its total equal to that channel's figures."""
    groups = _groups(conn, filt, ("channel",))
    by_channel = [{"channel": key[0], **groups[key].stage().as_dict()}
                  for key in sorted(groups)]
    total = _total(groups.values()).stage() if groups else EMPTY
    return {"by_channel": by_channel, "total": total.as_dict()}


BREAKDOWNS = {"channel": "channel", "medium": "medium", "campaign": "campaign",
              "ad": "ad_id", "opening_keyword": "opening_keyword"}
"""What a summary can be broken down by: its name in the API -> the summary column (a lead's
campaign is its resolved campaign key, `funnel.campaign`)."""


def breakdown(conn: psycopg.Connection, filt: ReportFilter, by: str, limit: int = 20
              ) -> dict[str, Any]:
    """The summary of `filt`'s leads per value of `by` (a key of BREAKDOWNS; leads without a
    value form one group, value None): the `limit` groups with the most leads, largest first,
    and how many groups and leads the others hold. By campaign, each group has its campaign's
    `name` (None for a key no payload or import named); by anything else `name` is None."""
    if by not in BREAKDOWNS:
        raise FilterError(f"by must be one of {', '.join(BREAKDOWNS)}")
    groups = _groups(conn, filt, (BREAKDOWNS[by],))
    figures = [(key[0], g.stage()) for key, g in groups.items()]
    figures.sort(key=lambda vf: (-vf[1].leads, vf[0] is None, vf[0] or ""))
    shown = figures[:limit]
    names = campaign_names(conn, (v for v, _ in shown)) if by == "campaign" else {}
    return {"by": by, "groups": [{"value": v, "name": names.get(v), **f.as_dict()}
                                 for v, f in shown],
            "omitted_groups": len(figures) - len(shown),
            "omitted_leads": sum(f.leads for _, f in figures[limit:])}


DURATION_BOUNDS = (300, 1800, 7200, 21600, 86400, 259200, 604800, 1209600, 2592000)
"""The edges (seconds) of the time-to-convert buckets: under 5 minutes, 5-30 minutes, 30
minutes-2 hours, 2-6 hours, 6 hours-1 day, 1-3 days, 3-7 days, 7-14 days, 14-30 days, 30 days
and more. Each is an edge of the summary's histograms too, so these counts are exact."""


def durations(conn: psycopg.Connection, filt: ReportFilter) -> dict[str, Any]:
    """How long the selected leads took from their first message to their booking and to their
    transaction: per stage, the count of leads in each bucket of DURATION_BOUNDS (a bucket
    holds from its lower edge, inclusive, to its upper edge). Leads whose booking or
    transaction was not observed are not counted for that stage."""
    query = sql.SQL(
        "SELECT t.stage, width_bucket(b.lower_seconds, {bounds}), sum(t.leads) "
        "FROM ({rows}) AS t JOIN duration_buckets b USING (bucket) GROUP BY 1, 2").format(
        bounds=sql.Literal(list(DURATION_BOUNDS)), rows=_times(filt, ()))
    counts = {"booking": [0] * (len(DURATION_BOUNDS) + 1),
              "transaction": [0] * (len(DURATION_BOUNDS) + 1)}
    for stage, bucket, n in conn.execute(query):
        counts[stage][bucket] += int(n)
    return {"bounds_seconds": list(DURATION_BOUNDS), "lead_to_booking": counts["booking"],
            "lead_to_transaction": counts["transaction"]}


def daily(conn: psycopg.Connection, filt: ReportFilter, *, times: bool = True
          ) -> list[dict[str, Any]]:
    """The summary per lead date and channel, in (leads_date, channel) order; without the
    median / p90 times (None) when `times` is false."""
    groups = _groups(conn, filt, ("leads_date", "channel"), times=times)
    return [{"leads_date": day.isoformat(), "channel": channel,
             **groups[(day, channel)].stage().as_dict()}
            for day, channel in sorted(groups)]

