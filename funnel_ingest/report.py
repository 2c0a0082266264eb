"""The funnel report's rows, streamed from Postgres (CSV via COPY, never built in memory)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import psycopg
from psycopg import sql

# User-facing columns first, in the order the growth team asked for, then the extras.
REPORT_COLUMNS = (
    "leads_date", "channel", "phone", "booking_date", "transaction_date", "transaction_value",
    "lead_id", "customer_key", "cycle", "lead_at", "booking_at", "transaction_at",
    "transaction_total", "transactions", "requested_date", "campaign_id", "ad_id",
    "opening_keyword",
)


def report_query(start: date, end: date, channels: list[str] | None = None) -> sql.Composed:
    cols = sql.SQL(", ").join(
        sql.SQL("round(transaction_value)::bigint AS transaction_value")
        if c == "transaction_value" else
        sql.SQL("round(transaction_total)::bigint AS transaction_total")
        if c == "transaction_total" else sql.Identifier(c)
        for c in REPORT_COLUMNS)
    where = [sql.SQL("leads_date BETWEEN {} AND {}").format(sql.Literal(start), sql.Literal(end))]
    if channels:
        where.append(sql.SQL("channel = ANY({})").format(sql.Literal(list(channels))))
    return sql.SQL("SELECT {} FROM funnel WHERE {} ORDER BY leads_date, lead_at, lead_id").format(
        cols, sql.SQL(" AND ").join(where))


def csv_chunks(conn: psycopg.Connection, start: date, end: date,
               channels: list[str] | None = None) -> Iterator[bytes]:
    """The report as CSV (header first), in chunks as Postgres produces them."""
    query = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT csv, HEADER true)").format(
        report_query(start, end, channels))
    with conn.cursor() as cur, cur.copy(query) as copy:
        for chunk in copy:
            yield bytes(chunk)


def count_leads(conn: psycopg.Connection, start: date, end: date) -> int:
    return conn.execute("SELECT count(*) FROM funnel WHERE leads_date BETWEEN %s AND %s",
                        (start, end)).fetchone()[0]
