"""Daily partitions by business date in FUNNEL_TIMEZONE.

The first partition is `FUNNEL_START_DATE` when set, else the first day with data, so the UI's
partition bar shows the days the deployment holds (not hundreds of empty days): the earlier of
the first `message_date` in Postgres and the first date in the raw archive minus the archive's
lookahead (a message is looked for up to that many days after it was sent; the archive alone
counts after a loss that only it survived). A new install with no data
at all starts `ARCHIVE_LOOKAHEAD_DAYS` before today. The start is read when the code location
loads (the daemon and the webserver reload it at start-up and on "Reload"); the stores are
asked with short timeouts, and a store that does not answer only makes the start fall back.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timedelta

import dagster as dg
import psycopg

from funnel_ingest import s3
from funnel_ingest.ingest.archive import ARCHIVE_LOOKAHEAD_DAYS, earliest_archive_date
from funnel_ingest.settings import Settings, get_settings

log = logging.getLogger(__name__)


def _first_message_date(settings: Settings) -> date | None:
    try:
        with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
            return conn.execute("SELECT min(message_date) FROM classified_messages").fetchone()[0]
    except psycopg.Error as exc:  # down, or not migrated yet
        log.info("partition start: no message date from Postgres (%s)", exc)
        return None


def _first_archive_date(settings: Settings) -> date | None:
    try:
        client = s3.client_for(settings.s3_endpoint_url, settings.s3_access_key_id,
                               settings.s3_secret_access_key.get_secret_value(),
                               settings.s3_region, timeout=2.0, attempts=1)
        first = earliest_archive_date(client, settings.raw_bucket)
    except Exception as exc:  # botocore raises many kinds; the start only falls back
        log.info("partition start: no archive date from S3 (%s)", exc)
        return None
    return first - timedelta(days=ARCHIVE_LOOKAHEAD_DAYS) if first else None


def partition_start(settings: Settings, today: date | None = None) -> date:
    """The first daily partition (see the module docstring)."""
    if settings.start_date:
        return settings.start_date
    today = today or datetime.now(settings.tz).date()
    found = [d for d in (_first_message_date(settings), _first_archive_date(settings)) if d]
    return min(*found, today) if found else today - timedelta(days=ARCHIVE_LOOKAHEAD_DAYS)


_settings = get_settings()
START_DATE = partition_start(_settings)

daily = dg.DailyPartitionsDefinition(start_date=START_DATE.isoformat(),
                                     timezone=_settings.funnel_timezone, end_offset=1)


def partition_key(day: date) -> str | None:
    """`day`'s partition key, None when the day is before the first partition."""
    return day.isoformat() if day >= START_DATE else None
