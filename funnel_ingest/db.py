"""Postgres access shared by the API, Dagster and the CLI: connections and the migration runner.

Migrations are the ordered `sql/NNN_name.sql` files. Each one is applied once, inside its own
transaction, and recorded in `schema_migrations` with its checksum. A session-level advisory lock
serialises concurrent runners (several API workers and the Dagster daemon start together), so
running `migrate()` from every process at start-up is safe.

The checksum is taken over the statements only: comments and the layout of the whitespace
between tokens do not count (sqlparse strips them; string literals are kept as written), so a
migration's comments can be corrected after it was applied, and any change to what it does is
refused.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
import sqlparse

log = logging.getLogger(__name__)

# Arbitrary constant: the advisory lock id of the migration runner ("funnel" in ASCII).
MIGRATION_LOCK_ID = 0x66756E6E656C
_FILE_RE = re.compile(r"^(\d{3,})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file is malformed, or an applied migration was edited afterwards."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the statements without comments, whitespace between tokens normalised."""
        statements = sqlparse.format(self.sql, strip_comments=True, strip_whitespace=True)
        return hashlib.sha256(statements.encode()).hexdigest()

    @property
    def file_checksum(self) -> str:
        """SHA-256 of the file as it is: what runners before the statement checksum recorded."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


# Runners before the statement checksum recorded the SHA-256 of the whole file. These are the
# files' checksums as they were applied then, before their comments were reworded; an
# installation that recorded one of them (or the current file's) is upgraded in place to the
# statement checksum, since the statements themselves did not change.
_FILE_CHECKSUMS_OF_APPLIED = {
    1: "9c22049628851411fbb466cb36acbe818a60bef3b260dd9efa94ad4133dcc738",
    2: "3394113c3ca70bfc8b8d33bf01f0af622e8bb2cd2dd27e86dc226f4d3233fdd5",
    3: "68f041530ea5b43b29952f6f4a72041f322df6deb7e3110fcfedee7958899af8",
}


def _recorded_by_an_older_runner(m: Migration, recorded: str) -> bool:
    return recorded in (m.file_checksum, _FILE_CHECKSUMS_OF_APPLIED.get(m.version))


def sql_dir() -> Path:
    """The `sql/` folder: FUNNEL_SQL_DIR, else the repository's (or image's) top-level `sql/`."""
    from funnel_ingest.settings import Settings
    configured = Settings().funnel_sql_dir
    return Path(configured) if configured else Path(__file__).resolve().parent.parent / "sql"


def load_migrations(directory: Path | None = None) -> list[Migration]:
    directory = directory or sql_dir()
    found: dict[int, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNN_snake_name.sql")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"{path.name}: version {version} is used twice")
        found[version] = Migration(version, match.group(2), path.read_text())
    return [found[v] for v in sorted(found)]


def migrate(database_url: str, directory: Path | None = None) -> list[int]:
    """Apply every pending migration; return the versions applied by this call."""
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {
                v: c for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            for m in migrations:
                if m.version in done:
                    if done[m.version] != m.checksum and _recorded_by_an_older_runner(
                        m, done[m.version]
                    ):
                        conn.execute(
                            "UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                            (m.checksum, m.version),
                        )
                        log.info("migration %03d_%s: recorded its statement checksum",
                                 m.version, m.name)
                    elif done[m.version] != m.checksum:
                        raise MigrationError(
                            f"migration {m.version:03d}_{m.name} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(m.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (m.version, m.name, m.checksum),
                    )
                log.info("applied migration %03d_%s", m.version, m.name)
                applied_now.append(m.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied_now


def drop_database(database_url: str) -> None:
    """Drop the URL's database if it exists, closing its connections (throwaway databases of
    tests and benchmarks)."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url).get("dbname") or "postgres"
    admin = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(dbname)))


def ensure_database(database_url: str) -> bool:
    """Create the URL's database when it does not exist (needs a server that answers).

    Returns True when it was created.
    """
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    dbname = info.get("dbname") or "postgres"
    admin = psycopg.conninfo.make_conninfo(database_url, dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone()
        if exists:
            return False
        try:
            conn.execute(
                psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(dbname))
            )
        except psycopg.errors.DuplicateDatabase:
            return False  # created concurrently by another process
    return True
