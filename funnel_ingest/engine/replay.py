"""Reading messages back from the raw archive (backfills, and recovery after a Redis loss).

The archive is the source of truth: every acknowledged body is there, partitioned by source and
the UTC date it was received. Messages sent on a business day may be received a little later
(provider retries), so a day is read from the objects received on that day and the next
`ARCHIVE_LOOKAHEAD_DAYS` days, then filtered by the business date of `sent_at`.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, time, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from ..archive import read_lines
from ..messages import SOURCES, NormalizedMessage, ParseResult
from ..providers import PayloadError, parse

log = logging.getLogger(__name__)


ARCHIVE_LOOKAHEAD_DAYS = 2  # a message is looked for in objects received up to 2 days later


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


def earliest_archive_date(s3: Any, bucket: str) -> date | None:
    """The first UTC date holding archive objects (one listing of date folders per source)."""
    found: list[date] = []
    for source in SOURCES:
        prefix = f"raw/source={source}/date="
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, Delimiter="/", MaxKeys=1)
        for common in page.get("CommonPrefixes", []):  # sorted: the first is the earliest
            try:
                found.append(date.fromisoformat(common["Prefix"][len(prefix):].rstrip("/")))
            except ValueError:
                continue
    return min(found) if found else None


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


def read_objects(s3: Any, bucket: str, keys: Iterable[str],
                 threads: int = 16) -> Iterator[tuple[str, ParseResult]]:
    """The parsed archive objects, in the order of `keys`, fetched `threads` at a time with a
    bounded read-ahead (memory holds at most `threads * 8` objects)."""
    def fetch(key: str) -> tuple[str, ParseResult]:
        return key, parse_object(key, s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    window = threads * 8
    it = iter(keys)
    with ThreadPoolExecutor(threads) as pool:
        while batch := list(itertools.islice(it, window)):
            yield from pool.map(fetch, batch)


def range_keys(s3: Any, bucket: str, start: date, end: date, tz: ZoneInfo,
               lookahead_days: int = ARCHIVE_LOOKAHEAD_DAYS) -> Iterator[str]:
    """Every archive key that may hold a message sent on a business day of [start, end]: the
    objects received on the UTC dates those days span, and `lookahead_days` after. Each UTC
    date is listed once, however many days of the range it serves."""
    first = utc_dates_for(start, tz, lookahead_days)[0]
    last = utc_dates_for(end, tz, lookahead_days)[-1]
    for n in range((last - first).days + 1):
        yield from archive_keys(s3, bucket, first + timedelta(days=n))


def archived_messages(s3: Any, bucket: str, start: date, end: date, tz: ZoneInfo,
                      lookahead_days: int = ARCHIVE_LOOKAHEAD_DAYS
                      ) -> Iterator[tuple[str, list[NormalizedMessage]]]:
    """(object key, its messages sent on a business day of [start, end]) for every archive
    object of the range, one object at a time."""
    keys = range_keys(s3, bucket, start, end, tz, lookahead_days)
    for key, part in read_objects(s3, bucket, keys):
        yield key, [m for m in part.messages if start <= m.sent_at.astimezone(tz).date() <= end]
