"""Campaigns read for people: display names for any list of campaign keys, and every campaign's
figures (GET /campaigns, `funnel campaigns list`).

A lead's campaign is `funnel.campaign`, the key the registry resolved (docs/funnel.md,
Campaigns). A key the registry does not know (an id no payload or import named) is listed as
it is, without a name: unknown ids are shown, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg.rows import dict_row


def campaign_names(conn: psycopg.Connection, keys: Iterable[str | None]) -> dict[str, str]:
    """The names of those of `keys` that have one (a key without a name is not in the
    result): what a report attaches to its campaign groups or rows."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    return dict(conn.execute("SELECT campaign, name FROM campaigns "
                             "WHERE campaign = ANY(%s) AND name IS NOT NULL", (wanted,)))


_FIGURES = """
    WITH figures AS (
        SELECT campaign, count(*) AS leads,
               count(*) FILTER (WHERE booking_at IS NOT NULL OR transaction_at IS NOT NULL)
                   AS bookings,
               count(transaction_at) AS transactions,
               coalesce(sum(transaction_value), 0)::bigint AS revenue
          FROM funnel WHERE campaign IS NOT NULL GROUP BY campaign),
    listed AS (
        SELECT coalesce(c.campaign, f.campaign) AS campaign, c.name, c.kind, c.source, c.sent,
               c.first_seen_at, c.last_seen_at, c.campaign IS NOT NULL AS known,
               coalesce(f.leads, 0) AS leads, coalesce(f.bookings, 0) AS bookings,
               coalesce(f.transactions, 0) AS transactions, coalesce(f.revenue, 0) AS revenue
          FROM campaigns c FULL JOIN figures f ON f.campaign = c.campaign)
    SELECT *, count(*) OVER () AS total FROM listed
     ORDER BY leads DESC, campaign LIMIT %s"""


def _rate(num: int, den: int | None) -> float | None:
    return round(num / den, 6) if den else None


def campaign_figures(conn: psycopg.Connection, limit: int = 1000) -> dict[str, Any]:
    """Every campaign (the registry's, and the keys of leads it does not know), the most leads
    first, up to `limit`: name, kind, where it came from, sent count (imported; null when
    unknown), leads (the replies it got), bookings (a paid lead counts as booked, as in the
    report's summaries), transactions, revenue (first payments) and the reply and conversion
    rates. `total`: how many campaigns there are."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(_FIGURES, (limit,)).fetchall()
    total = rows[0]["total"] if rows else 0
    out = []
    for r in rows:
        out.append({
            "campaign": r["campaign"], "name": r["name"], "known": r["known"], "kind": r["kind"],
            "source": r["source"], "sent": r["sent"], "leads": r["leads"],
            "bookings": r["bookings"], "transactions": r["transactions"],
            "revenue": r["revenue"], "reply_rate": _rate(r["leads"], r["sent"]),
            "lead_to_transaction": _rate(r["transactions"], r["leads"]),
            "first_seen_at": r["first_seen_at"], "last_seen_at": r["last_seen_at"]})
    return {"campaigns": out, "total": total, "omitted": total - len(out)}
