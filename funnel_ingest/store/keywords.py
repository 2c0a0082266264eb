"""Keyword versions in Postgres (the truth) and their Redis cache (the original contract).

Postgres: `keyword_versions` (one row per distinct content, exactly one `current`) and
`keyword_entries` (`sql/003_keywords.sql`); `keyword_publications` (`sql/010_...`), one row each
time a version became current, and how (seed, sync, put, rollback). Versions are never deleted.
Redis, replaced atomically (MULTI/EXEC) on every publish:

    keywords:opening | keywords:booking | keywords:transaction   SETs of the active keywords
    keywords:version                                              the current version
    keywords:entries                                              JSON: version, source,
                                                                  created_at, keywords (with
                                                                  channel and active)

One source of truth at a time (`source_of_truth`, docs/funnel.md "Who owns the list"):
- with GSHEET_KEY set, the Google Sheet. `sync` reads it; `replace` (PUT /keywords), `rollback`
  and a sync of a CSV raise `SourceOfTruthError` naming the sheet;
- else the API and the CLI. The scheduled sync (`sync(scheduled=True)`, the `keywords` asset)
  publishes the file (KEYWORDS_CSV, else the packaged list) only while that file is in charge:
  when no version exists yet, or when the current version's last publication was a sync of
  that same file. After a PUT or a rollback the file waits for an explicit `funnel keywords
  sync` / `POST /keywords/sync`, so an edit made through the API is never overwritten silently.

Every publication (seed aside) is refused with `StageEmptiedError` when a stage that has active
keywords now would have none, unless `force`. Any failure raises before anything is written,
so the previous version stays current.
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
    emptied_stages,
    parse,
    read_csv_rows,
)
from funnel_ingest.engine.model import STAGES, Keyword, Stage
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
Action = Literal["seed", "sync", "put", "rollback"]


@dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync / replace / rollback did. `changed`: the current version is a different one
    now. `skipped`: why a scheduled sync published nothing (the file is not in charge)."""

    version: str
    changed: bool
    source: str
    row_count: int
    warnings: tuple[str, ...] = ()
    cached: bool = True  # False when Redis was not updated (Postgres is; readers fall back)
    skipped: str | None = None
    forced: bool = False  # published with `force` although it empties a stage


# --- who owns the list -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SourceOfTruth:
    """Where the keyword list is edited: the Google Sheet (`kind` "sheet") or the API and the
    CLI (`kind` "api"); `detail` says it in a sentence."""

    kind: Literal["sheet", "api"]
    detail: str
    sheet_key: str | None = None
    worksheet: str | None = None  # None: the spreadsheet's first worksheet
    seed_file: str | None = None  # "api": the file the scheduled sync reads

    @property
    def writable(self) -> bool:
        """Do PUT /keywords and rollbacks publish (rather than answer 409)?"""
        return self.kind == "api"

    def as_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "detail": self.detail, "sheet_key": self.sheet_key,
                "worksheet": self.worksheet, "file": self.seed_file, "writable": self.writable}


def source_of_truth(settings: Settings) -> SourceOfTruth:
    """The sheet when GSHEET_KEY is set, else the API and the CLI (module docstring)."""
    if settings.gsheet_key:
        worksheet = settings.gsheet_worksheet or None
        where = f"worksheet {worksheet!r}" if worksheet else "its first worksheet"
        return SourceOfTruth("sheet", f"Google Sheet {settings.gsheet_key} ({where}); edit the "
                             "sheet, the scheduled sync publishes it",
                             settings.gsheet_key, worksheet)
    file = _csv_label(None, settings)
    return SourceOfTruth("api", "the API and the CLI (PUT /keywords, POST /keywords/sync, "
                         f"funnel keywords); the scheduled sync publishes {file} only when no "
                         "version exists yet or when a sync of that file published the current "
                         "version", seed_file=file)


class SourceOfTruthError(RuntimeError):
    """A change through the API or the CLI while the Google Sheet is the source of truth."""

    def __init__(self, truth: SourceOfTruth, what: str) -> None:
        self.truth = truth
        where = f"worksheet {truth.worksheet!r}" if truth.worksheet else "its first worksheet"
        super().__init__(
            f"{what} refused: the keyword list is managed in the Google Sheet {truth.sheet_key} "
            f"({where}, GSHEET_KEY); edit the sheet (the scheduled sync publishes it, or `funnel "
            "keywords sync`), or unset GSHEET_KEY to manage keywords through the API and CLI")


class StageEmptiedError(ValueError):
    """Publishing would leave a stage that has active keywords today without any."""

    def __init__(self, stages: Sequence[Stage], current: KeywordSet) -> None:
        self.stages = list(stages)
        self.current = current.version
        had = ", ".join(f"{len(current.active(s))} {s}" for s in self.stages)
        names = " and ".join(self.stages)
        super().__init__(
            f"no active {names} keyword would remain (the current version {current.version} "
            f"has {had}): {names} matching would stop; nothing was published. Publish it with "
            "force (force=true, --force) if that is meant; preview its impact first")


class UnknownVersionError(LookupError):
    def __init__(self, version: str) -> None:
        self.version = version
        super().__init__(f"no keyword version {version!r} (see GET /keywords/versions or "
                         "`funnel keywords versions`)")


def _require_writable(settings: Settings, what: str) -> None:
    truth = source_of_truth(settings)
    if not truth.writable:
        raise SourceOfTruthError(truth, what)


# --- Postgres --------------------------------------------------------------------------------

def save_version(conn: psycopg.Connection, kset: KeywordSet, *, action: Action = "sync",
                 source: str | None = None, force: bool = False) -> bool:
    """Store `kset` (if its version is new) and make it the current version, in one transaction,
    recording the publication (`action`, `source`: default `kset.source`).

    Re-saving the same content only marks it current again. Returns True when the current
    version changed (a new version, or an older one made current again). Raises
    `StageEmptiedError` (nothing written) when a stage with active keywords in the current
    version has none in `kset`, unless `force`. Commits when `conn` is in autocommit mode or
    has no transaction open; else it is part of the caller's transaction.
    """
    return _save(conn, kset, action, source, force)[0]


def _save(conn: psycopg.Connection, kset: KeywordSet, action: Action, source: str | None,
          force: bool) -> tuple[bool, bool]:
    """`save_version`, and whether `force` was needed (a stage emptied)."""
    if not kset.keywords:
        raise EmptyKeywordSetError("the keyword list")
    forced, emptied = False, []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (PUBLISH_LOCK_ID,))
        row = conn.execute("SELECT version FROM keyword_versions WHERE current").fetchone()
        previous = row[0] if row else None
        if action == "seed" and previous is not None:
            return False, False  # another publisher was first: its version stays
        if previous is not None and previous != kset.version:
            # checked under the publishers' lock: against the version this one replaces
            current = get_version(conn, previous)
            emptied = emptied_stages(current.keywords, kset.keywords) if current else []
            if emptied and not force:
                raise StageEmptiedError(emptied, current)  # type: ignore[arg-type]
            forced = bool(emptied)
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
            conn.execute("INSERT INTO keyword_publications (version, previous, action, source, "
                         "forced) VALUES (%s, %s, %s, %s, %s)",
                         (kset.version, previous, action, source or kset.source, forced))
    log.info("keyword version %s (%d keywords, %s) %s%s", kset.version, len(kset.keywords),
             kset.source, "is now current" if previous != kset.version else "unchanged",
             f" (forced: emptied {', '.join(emptied)})" if forced else "")
    return previous != kset.version, forced


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


@dataclass(frozen=True, slots=True)
class Publication:
    """One time a version became current (`keyword_publications`)."""

    version: str
    previous: str | None
    action: Action
    source: str
    forced: bool
    published_at: datetime


_PUBLICATION = "SELECT version, previous, action, source, forced, published_at " \
               "FROM keyword_publications"


def last_publication(conn: psycopg.Connection) -> Publication | None:
    """How the current version became current (the latest publication)."""
    row = conn.execute(f"{_PUBLICATION} ORDER BY id DESC LIMIT 1").fetchone()
    return Publication(*row) if row else None


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """A stored version as `list_versions` lists it; `active`: active keywords per stage;
    `last`: its latest publication (None for versions stored by older releases without one)."""

    version: str
    source: str
    created_at: datetime
    activated_at: datetime
    row_count: int
    current: bool
    active: dict[str, int]
    last: Publication | None


def list_versions(conn: psycopg.Connection, limit: int = 100) -> list[VersionInfo]:
    """The stored versions, the most recently made current first."""
    stage_counts = ", ".join(f"count(*) FILTER (WHERE e.active AND e.stage = '{s}')"
                             for s in STAGES)
    rows = conn.execute(
        f"""SELECT v.version, v.source, v.created_at, v.activated_at, v.row_count, v.current,
                   c.*, p.version, p.previous, p.action, p.source, p.forced, p.published_at
              FROM keyword_versions v
             CROSS JOIN LATERAL (SELECT {stage_counts} FROM keyword_entries e
                                  WHERE e.version = v.version) c
              LEFT JOIN LATERAL (SELECT * FROM keyword_publications p
                                  WHERE p.version = v.version ORDER BY p.id DESC LIMIT 1) p
                ON true
             ORDER BY v.activated_at DESC, v.version
             LIMIT %s""", (limit,)).fetchall()
    n = len(STAGES)
    return [VersionInfo(*r[:6], dict(zip(STAGES, r[6:6 + n])),
                        Publication(*r[6 + n:]) if r[6 + n] else None) for r in rows]


def resolve(conn: psycopg.Connection, version: str | None) -> KeywordSet:
    """A stored version (None: the current one); `UnknownVersionError` when there is none."""
    kset = current_version(conn) if version is None else get_version(conn, version)
    if kset is None:
        raise UnknownVersionError(version or "current")
    return kset


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
        save_version(conn, kset, action="seed")
        kset = current_version(conn) or kset
        if redis_client is not None:
            _try_cache(redis_client, kset)
        return kset
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

def _csv_label(csv_path: str | Path | None, settings: Settings) -> str:
    """The source label of a CSV: `csv:<path>`, or `default:keywords.csv` for the packaged list."""
    if csv_path is None and not settings.keywords_csv:
        return "default:keywords.csv"
    return f"csv:{Path(csv_path or settings.keywords_csv)}"


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
        label = _csv_label(csv_path, settings)
        try:
            rows = read_csv_rows(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise KeywordSourceError("csv_unreadable",
                                     f"keyword CSV {path} unreadable: {exc}") from None
    parsed = parse(rows)
    if not parsed.keywords:
        raise EmptyKeywordSetError(label)
    return KeywordSet.build(parsed.keywords, label, warnings=parsed.warnings)


def _client(settings: Settings, redis_client: redis.Redis | None
            ) -> tuple[redis.Redis, bool]:
    if redis_client is not None:
        return redis_client, False
    import redis as redis_lib

    return redis_lib.Redis.from_url(settings.redis_url, socket_timeout=5,
                                    socket_connect_timeout=2), True


def publish(settings: Settings, kset: KeywordSet, *, redis_client: redis.Redis | None = None,
            action: Action = "sync", source: str | None = None,
            force: bool = False) -> SyncResult:
    """Make `kset` current in Postgres (`save_version`: refused when it empties a stage, unless
    `force`), then refresh the Redis cache.

    Two publishers (say the CLI and the API) may commit in one order and write Redis in the
    other; so after writing the cache, Postgres' current version is checked again and the cache
    rewritten until they agree. A Redis failure is a warning (`cached=False`): Postgres holds the
    new version and `load_current` readers fall back to it.
    """
    if not kset.keywords:
        raise EmptyKeywordSetError("the keyword list")
    redis_client, own = _client(settings, redis_client)
    try:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            changed, forced = _save(conn, kset, action, source, force)
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
    return SyncResult(kset.version, changed, source or kset.source, len(kset.keywords),
                      warnings, cached=problem is None, forced=forced)


def _file_in_charge(conn: psycopg.Connection, label: str) -> str | None:
    """None when the scheduled sync may publish the file `label`: nothing is published yet, or
    the current version's last publication was a sync (or seed) of that same file. Else why
    not, in a sentence."""
    last = last_publication(conn)
    current = current_version_id(conn)
    if current is None or last is None or last.version != current:
        return None if current is None else (
            f"the current version {current} was not published by a sync of {label}")
    if last.action in ("sync", "seed") and last.source == label:
        return None
    how = {"put": "published through PUT /keywords", "rollback": f"made current by a rollback "
           f"({last.source})"}.get(last.action, f"published from {last.source}")
    return (f"the current version {current} was {how} at "
            f"{last.published_at.isoformat(timespec='seconds')}; {label} is published again "
            "only by an explicit `funnel keywords sync` or POST /keywords/sync")


def sync(settings: Settings, *, source: Source = "auto", csv_path: str | Path | None = None,
         redis_client: redis.Redis | None = None, force: bool = False,
         scheduled: bool = False) -> SyncResult:
    """Pull the keywords from the sheet (auto: when GSHEET_KEY is set) or the CSV (`csv_path`,
    KEYWORDS_CSV, else the packaged default), validate and publish them.

    A CSV while the sheet is the source of truth raises `SourceOfTruthError`. `scheduled` (the
    `keywords` asset): without a sheet, the file is published only while it is in charge
    (module docstring); else nothing is written and `skipped` says why. Raises (and leaves the
    previous version current) on any failure, an empty list, or a list that empties a stage
    (`StageEmptiedError`) without `force`.
    """
    truth = source_of_truth(settings)
    reads_sheet = source == "sheet" or (source == "auto" and csv_path is None
                                        and truth.kind == "sheet")
    if truth.kind == "sheet" and not reads_sheet:
        raise SourceOfTruthError(truth, "publishing a CSV file")
    kset = read_source(settings, source=source, csv_path=csv_path)
    if scheduled and not reads_sheet:
        with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
            reason = _file_in_charge(conn, kset.source)
            current = current_version(conn) if reason else None
        if reason and current is not None:
            log.info("scheduled keyword sync: %s not published: %s", kset.source, reason)
            # what stays current, and why the file was not published
            return SyncResult(current.version, False, current.source, len(current.keywords),
                              skipped=f"{kset.source} not published: {reason}")
    return publish(settings, kset, redis_client=redis_client, action="sync", force=force)


def replace(settings: Settings, keywords: Sequence[Keyword], *, source: str = "api",
            warnings: Sequence[str] = (), redis_client: redis.Redis | None = None,
            force: bool = False) -> SyncResult:
    """Publish an explicit list (the API's PUT /keywords); `SourceOfTruthError` under the
    sheet."""
    _require_writable(settings, "PUT /keywords")
    if not keywords:
        raise EmptyKeywordSetError("the request")
    return publish(settings, KeywordSet.build(keywords, source, warnings=warnings),
                   redis_client=redis_client, action="put", force=force)


def rollback(settings: Settings, version: str, *, by: str = "api",
             redis_client: redis.Redis | None = None, force: bool = False) -> SyncResult:
    """Make the stored `version` current again (`by`: who asked, api or cli).
    `SourceOfTruthError` under the sheet, `UnknownVersionError` when it was never stored,
    `StageEmptiedError` when it lacks a stage the current version has (unless `force`)."""
    _require_writable(settings, "a keyword rollback")
    with psycopg.connect(settings.database_url, connect_timeout=5, autocommit=True) as conn:
        kset = get_version(conn, version)
    if kset is None:
        raise UnknownVersionError(version)
    result = publish(settings, kset, redis_client=redis_client, action="rollback", source=by,
                     force=force)
    # the version's own origin, not who rolled back to it
    return SyncResult(result.version, result.changed, kset.source, result.row_count,
                      result.warnings, result.cached, forced=result.forced)


def current_classifier(conn: psycopg.Connection, r: redis.Redis | None,
                       settings: Settings) -> Classifier:
    """A classifier on the current keyword version (seeded from the configured source when no
    version is stored yet): the one every drain, backfill and check classifies with."""
    from funnel_ingest.engine.classify import Classifier

    kset = load_current(conn, r, settings=settings)
    return Classifier(list(kset.keywords), kset.version, settings.tz)
