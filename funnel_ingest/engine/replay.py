"""Reading messages back from the raw archive (backfills, and recovery after a Redis loss).

The archive is the source of truth: every acknowledged body is there, partitioned by source and
the UTC date it was received. Messages sent on a business day may be received a little later
(provider retries), so a day is read from the objects received on that day and the next
`lookahead_days` days, then filtered by the business date of `sent_at`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..archive import read_lines
from ..messages import SOURCES, NormalizedMessage, ParseResult
from ..providers import PayloadError, parse

log = logging.getLogger(__name__)


def utc_dates_for(day: date, tz: ZoneInfo, lookahead_days: int) -> list[date]:
    """UTC dates whose archive objects may hold messages sent on business `day`."""
    start = datetime.combine(day, time.min, tz).astimezone(timezone.utc).date()
    end = datetime.combine(day, time.max, tz).astimezone(timezone.utc).date()
    return [start + timedelta(days=i) for i in range((end - start).days + 1 + lookahead_days)]


def archive_keys(s3: Any, bucket: str, utc_day: date) -> Iterator[str]:
    for source in SOURCES:
        prefix = f"raw/source={source}/date={utc_day.isoformat()}/"
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"]


def parse_object(key: str, data: bytes) -> ParseResult:
    """All messages of one archive object, with their raw key and line."""
    result = ParseResult()
    for line_no, record in enumerate(read_lines(data), start=1):
        try:
            part = parse(record["source"], record["body"].encode())
        except PayloadError as exc:  # archived bodies were valid when acknowledged
            log.warning("%s line %d no longer parses: %s", key, line_no, exc)
            continue
        received = datetime.fromisoformat(record["received_at"])
        for item in (*part.messages, *part.statuses, *part.dead_letters):
            item.raw_key, item.raw_line = key, line_no
        for m in part.messages:
            m.received_at = received
        result.extend(part)
    return result


def archived_day(s3: Any, bucket: str, day: date, tz: ZoneInfo,
                 lookahead_days: int = 2) -> tuple[list[NormalizedMessage], int]:
    """Messages sent on business `day` found in the archive, and the number of objects read."""
    messages: list[NormalizedMessage] = []
    objects = 0
    for utc_day in utc_dates_for(day, tz, lookahead_days):
        for key in archive_keys(s3, bucket, utc_day):
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            objects += 1
            messages += [m for m in parse_object(key, data).messages
                         if m.sent_at.astimezone(tz).date() == day]
    return messages, objects
