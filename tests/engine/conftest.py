"""Engine fixtures: a classifier on the packaged keywords; funnel and transaction rows."""

from __future__ import annotations

import psycopg
import pytest

from funnel_ingest.engine.classify import Classifier
from funnel_ingest.engine.keywords import default_csv_path, load_csv

@pytest.fixture(scope="session")
def classifier(settings) -> Classifier:
    keywords = load_csv(default_csv_path())
    return Classifier(list(keywords), "test-default", settings.tz)


def funnel_rows(conn: psycopg.Connection) -> list[tuple]:
    """The funnel table without its bookkeeping timestamp, in a stable order."""
    return conn.execute(
        """SELECT lead_id, leads_date, channel, phone, booking_date, transaction_date,
                  transaction_value, customer_key, cycle, lead_at, booking_at, transaction_at,
                  transaction_total, transactions, requested_date, campaign_id, ad_id,
                  opening_keyword, opening_source, opening_message_id
             FROM funnel ORDER BY lead_id""").fetchall()


def transaction_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        """SELECT m.source, m.message_id, m.room_key, t.lead_id, t.amount, t.paid_at
             FROM transactions t JOIN classified_messages m ON m.id = t.message_pk
            ORDER BY 1, 2, 3""").fetchall()
