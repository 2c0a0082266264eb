"""Keyword versions in Postgres (the truth) and their Redis cache (the original contract).

Postgres (`sql/003_keywords.sql`): `keyword_versions` (one row per distinct content, exactly one
`current`) and `keyword_entries`. Redis, replaced atomically (MULTI/EXEC) on every publish:

    keywords:opening | keywords:booking | keywords:transaction   SETs of the active keywords
    keywords:version                                              the current version
    keywords:entries                                              JSON: version, source,
                                                                  created_at, keywords (with
                                                                  channel and active)

`sync` reads the configured source (the Google Sheet when GSHEET_KEY is set, else KEYWORDS_CSV,
else the packaged default), validates it and publishes it. A failure or an empty list raises
before anything is written, so the previous version stays current.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import psycopg
from psycopg.types.json import Jsonb
from redis.exceptions import RedisError

from funnel_ingest.engine.keywords import (
    EmptyKeywordSetError,
    KeywordSet,
    canonical,
    default_csv_path,
    parse,
    read_csv_rows,
)
from funnel_ingest.engine.model import STAGES, Keyword
from funnel_ingest.store.sheets import KeywordSourceError, SheetError, fetch_rows

if TYPE_CHECKING:
    import redis

    from funnel_ingest.engine.classify import Classifier
    from funnel_ingest.settings import Settings

log = logging.getLogger(__name__)

REDIS_STAGE_KEY = "keywords:{stage}"
REDIS_VERSION_KEY = "keywords:version"
REDIS_ENTRIES_KEY = "keywords:entries"
# Advisory lock id serialising publishers ("kwords" in ASCII).
PUBLISH_LOCK_ID = 0x6B776F726473

Source = Literal["auto", "sheet", "csv"]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync / replace published. `changed`: the current version is a different one now."""

    version: str
    changed: bool
    source: str
    row_count: int
    warnings: tuple[str, ...] = ()
    cached: bool = True  # False when Redis was not updated (Postgres is; readers fall back)


# --- Postgres --------------------------------------------------------------------------------

def save_version(conn: psycopg.Connection, kset: KeywordSet) -> bool:
    """Store `kset` (if its version is new) and make it the current version, in one transaction.

    Re-saving the same content only marks it current again. Returns True when the current
    version changed (a new version, or an older one made current again). Commits when `conn` is
    in autocommit mode or has no transaction open; else it is part of the caller's transaction.
    """
    if not kset.keywords:
        raise EmptyKeywordSetError("the keyword list")
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_ID,))
        row = conn.execute("SELECT version FROM keyword_versions WHERE current").fetchone()
        previous = row[0] if row else None
        inserted = conn.execute(
            """INSERT INTO keyword_versions (version, source, created_at, row_count, warnings)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (version) DO NOTHING
               RETURNING version""",
            (kset.version, kset.source, kset.created_at, len(kset.keywords),
             Jsonb(list(kset.warnings)))).fetchone()
        if inserted:
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO keyword_entries (version, stage, keyword, channel, active) "
                    "VALUES (%s, %s, %s, %s, %s)",
                    [(kset.version, k.stage, k.keyword, k.channel, k.active)
                     for k in kset.keywords])
        if previous != kset.version:
            conn.execute("UPDATE keyword_versions SET current = false WHERE current")
            conn.execute("UPDATE keyword_versions SET current = true, activated_at = now() "
                         "WHERE version = %s", (kset.version,))
    log.info("keyword version %s (%d keywords, %s) %s", kset.version, len(kset.keywords),
             kset.source, "is now current" if previous != kset.version else "unchanged")
    return previous != kset.version


def current_version_id(conn: psycopg.Connection) -> str | None:
    row = conn.execute("SELECT version FROM keyword_versions WHERE current").fetchone()
    return row[0] if row else None


def get_version(conn: psycopg.Connection, version: str) -> KeywordSet | None:
    """One stored version (current or not)."""
    head = conn.execute(
        "SELECT version, source, created_at, warnings FROM keyword_versions WHERE version = %s",
        (version,)).fetchone()
    if head is None:
        return None
    rows = conn.execute(
        "SELECT stage, keyword, channel, active FROM keyword_entries WHERE version = %s",
        (version,)).fetchall()
    return KeywordSet(canonical(Keyword(*r) for r in rows), head[0], head[1], head[2],
                      tuple(head[3] or ()))


def current_version(conn: psycopg.Connection) -> KeywordSet | None:
    """The current version with its entries, or None when none was published yet."""
    version = current_version_id(conn)
    return get_version(conn, version) if version else None


# --- Redis -----------------------------------------------------------------------------------

def _entries_json(kset: KeywordSet) -> str:
    return json.dumps({"version": kset.version, "source": kset.source,
                       "created_at": kset.created_at.isoformat(),
                       "warnings": list(kset.warnings), "keywords": kset.items()},
                      ensure_ascii=False, separators=(",", ":"))


def cache(redis_client: redis.Redis, kset: KeywordSet) -> None:
    """Replace the Redis copy of `kset` in one MULTI/EXEC: readers see the old set or the new one,
    never a mix."""
    with redis_client.pipeline(transaction=True) as pipe:
        for stage in STAGES:
            key = REDIS_STAGE_KEY.format(stage=stage)
            pipe.delete(key)
            members = kset.active(stage)
            if members:
                pipe.sadd(key, *members)
        pipe.set(REDIS_VERSION_KEY, kset.version)
        pipe.set(REDIS_ENTRIES_KEY, _entries_json(kset))
        pipe.execute()


def cached(redis_client: redis.Redis) -> KeywordSet | None:
    """The set held in Redis (`keywords:entries`), or None."""
    raw = redis_client.get(REDIS_ENTRIES_KEY)
    if not raw:
        return None
    data = json.loads(raw)
    keywords = [Keyword(i["stage"], i["keyword"], i.get("channel"), bool(i.get("active", True)))
                for i in data["keywords"]]
    return KeywordSet(canonical(keywords), data["version"], data["source"],
                      datetime.fromisoformat(data["created_at"]),
                      tuple(data.get("warnings") or ()))


def load_current(conn: psycopg.Connection, redis_client: redis.Redis | None = None, *,
                 settings: Settings | None = None) -> KeywordSet:
    """The current keyword set: from Redis when its version is Postgres' current one, else from
    Postgres (and the cache refreshed). When nothing was published yet, the configured source
    (`settings`, default: the environment's) is read and published first."""
    version = current_version_id(conn)
    if version is None:
        from funnel_ingest.settings import get_settings

        cfg = settings or get_settings()
        kset = read_source(cfg)
        save_version(conn, kset)
        if redis_client is not None:
            _try_cache(redis_client, kset)
        return current_version(conn) or kset
    if redis_client is not None:
        try:
            hit = cached(redis_client)
            if hit is not None and hit.version == version:
                return hit
        except (RedisError, OSError, ValueError, KeyError, TypeError) as exc:
            # the cache is an optimisation (unreachable or garbled): Postgres is the truth
            log.warning("keyword cache unreadable, reading Postgres: %s", exc)
    kset = get_version(conn, version)
    assert kset is not None
    if redis_client is not None:
        _try_cache(redis_client, kset)
    return kset


def _try_cache(redis_client: redis.Redis, kset: KeywordSet) -> str | None:
    try:
        cache(redis_client, kset)
        return None
    except (RedisError, OSError) as exc:
        log.error("keyword version %s saved but the Redis cache was not updated: %s",
                  kset.version, exc)
        return f"Redis cache not updated: {type(exc).__name__}: {exc}"


# --- sources and publishing ------------------------------------------------------------------

def read_source(settings: Settings, *, source: Source = "auto",
                csv_path: str | Path | None = None) -> KeywordSet:
    """Read and validate the keyword source; raises SheetError / KeywordSourceError /
    KeywordSetError (every bad row) / EmptyKeywordSetError."""
    if source not in ("auto", "sheet", "csv"):
        raise ValueError(f"unknown keyword source {source!r} (auto, sheet or csv)")
    use_sheet = source == "sheet" or (source == "auto" and csv_path is None
                                      and bool(settings.gsheet_key))
    if use_sheet:
        if not settings.gsheet_key:
            raise SheetError("not_configured", "GSHEET_KEY is not set")
        worksheet = settings.gsheet_worksheet or None
        rows = fetch_rows(settings.gsheet_key, settings.google_service_account_file, worksheet)
        label = f"sheet:{settings.gsheet_key}" + (f"/{worksheet}" if worksheet else "")
    else:
        path = Path(csv_path or settings.keywords_csv or default_csv_path())
        label = ("default:keywords.csv" if not (csv_path or settings.keywords_csv)
                 else f"csv:{path}")
        try:
            rows = read_csv_rows(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeywordSourceError("csv_unreadable",
                                     f"keyword CSV {path} unreadable: {exc}") from None
    parsed = parse(rows)
    if not parsed.keywords:
        raise EmptyKeywordSetError(label)
    return KeywordSet.build(parsed.keywords, label, warnings=parsed.warnings)


def publish(settings: Settings, kset: KeywordSet, *,
            redis_client: redis.Redis | None = None) -> SyncResult:
    """Make `kset` current in Postgres, then refresh the Redis cache.

    Two publishers (say the CLI and the API) may commit in one order and write Redis in the
    other; so after writing the cache, Postgres' current version is checked again and the cache
    rewritten until they agree. A Redis failure is a warning (`cached=False`): Postgres holds the
    new version and `load_current` readers fall back to it.
    """
    if not kset.keywords:
        raise EmptyKeywordSetError("the keyword list")
    own = redis_client is None
    if own:
        import redis as redis_lib

        redis_client = redis_lib.Redis.from_url(settings.redis_url, socket_timeout=5,
                                                socket_connect_timeout=2)
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            changed = save_version(conn, kset)
            problem = _try_cache(redis_client, kset)
            written = kset.version
            for _ in range(5):
                now = current_version_id(conn)
                if problem or now is None or now == written:
                    break
                newer = get_version(conn, now)
                if newer is None:
                    break
                problem, written = _try_cache(redis_client, newer), now
    finally:
        if own:
            redis_client.close()
    warnings = kset.warnings + ((problem,) if problem else ())
    return SyncResult(kset.version, changed, kset.source, len(kset.keywords), warnings,
                      cached=problem is None)


def sync(settings: Settings, *, source: Source = "auto", csv_path: str | Path | None = None,
         redis_client: redis.Redis | None = None) -> SyncResult:
    """Pull the keywords from the sheet (auto: when GSHEET_KEY is set) or the CSV (`csv_path`,
    KEYWORDS_CSV, else the packaged default), validate and publish them.

    Raises (and leaves the previous version current) on any failure or an empty list.
    """
    kset = read_source(settings, source=source, csv_path=csv_path)
    return publish(settings, kset, redis_client=redis_client)


def replace(settings: Settings, keywords: Sequence[Keyword], *, source: str = "api",
            warnings: Sequence[str] = (), redis_client: redis.Redis | None = None) -> SyncResult:
    """Publish an explicit list (the API's PUT /keywords)."""
    if not keywords:
        raise EmptyKeywordSetError("the request")
    return publish(settings, KeywordSet.build(keywords, source, warnings=warnings),
                   redis_client=redis_client)


def current_classifier(conn: psycopg.Connection, r: redis.Redis | None,
                       settings: Settings) -> Classifier:
    """A classifier on the current keyword version (seeded from the configured source when no
    version is stored yet): the one every drain, backfill and check classifies with."""
    from funnel_ingest.engine.classify import Classifier

    kset = load_current(conn, r, settings=settings)
    return Classifier(list(kset.keywords), kset.version, settings.tz)
