"""Keyword publications in the store: every time a version became current is recorded, versions
are never deleted, and migration 010 records the versions an older release published so the
scheduled sync knows who is in charge of the list after the upgrade."""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from funnel_ingest import db
from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
from funnel_ingest.store import keywords as keyword_store
from tests.keyword_cases import CURRENT, WITHOUT_BOOKING, WITHOUT_RESERVASI


@pytest.fixture
def fresh_db(settings):
    name = f"funnel_kwpub_{uuid.uuid4().hex[:10]}"
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    db.ensure_database(url)
    yield url
    db.drop_database(url)


def test_migration_010_records_the_versions_published_before_it(fresh_db, tmp_path):
    for path in sorted(db.sql_dir().glob("*.sql")):
        if int(path.name[:3]) < 10:
            shutil.copy(path, tmp_path / path.name)
    db.migrate(fresh_db, tmp_path)
    default = KeywordSet.build(load_csv(default_csv_path()), "default:keywords.csv")
    edited = KeywordSet.build(CURRENT, "api")
    earlier = datetime.now(UTC) - timedelta(days=3)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for kset, at, current in ((default, earlier, False),
                                  (edited, earlier + timedelta(days=1), True)):
            conn.execute("INSERT INTO keyword_versions (version, source, activated_at, "
                         "row_count, current) VALUES (%s, %s, %s, %s, %s)",
                         (kset.version, kset.source, at, len(kset), current))
            for k in kset.keywords:
                conn.execute("INSERT INTO keyword_entries VALUES (%s, %s, %s, %s, %s)",
                             (kset.version, k.stage, k.keyword, k.channel, k.active))
    shutil.copy(db.sql_dir() / "010_keyword_publications.sql", tmp_path)
    assert db.migrate(fresh_db, tmp_path) == [10]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        rows = conn.execute("SELECT version, action, source FROM keyword_publications "
                            "ORDER BY id").fetchall()
        assert rows == [(default.version, "sync", "default:keywords.csv"),
                        (edited.version, "put", "api")]
        last = keyword_store.last_publication(conn)
        assert last is not None and last.version == edited.version
        # the list edited through the API stays in charge after the upgrade
        assert "PUT /keywords" in keyword_store._file_in_charge(conn, "default:keywords.csv")


def test_every_publication_is_recorded_and_no_version_is_deleted(settings, r, kw_db):
    cfg = settings.replace(gsheet_key="", keywords_csv="")
    a = keyword_store.replace(cfg, CURRENT, redis_client=r)
    b = keyword_store.replace(cfg, WITHOUT_RESERVASI, redis_client=r)
    same = keyword_store.replace(cfg, WITHOUT_RESERVASI, redis_client=r)
    assert same.changed is False
    with pytest.raises(keyword_store.StageEmptiedError):
        keyword_store.replace(cfg, WITHOUT_BOOKING, redis_client=r)
    c = keyword_store.replace(cfg, WITHOUT_BOOKING, redis_client=r, force=True)
    back = keyword_store.rollback(cfg, a.version, by="cli", redis_client=r)
    assert back.changed and back.source == "api"  # the version's own origin
    rows = kw_db.execute("SELECT version, previous, action, source, forced "
                         "FROM keyword_publications ORDER BY id").fetchall()
    assert rows == [(a.version, None, "put", "api", False),
                    (b.version, a.version, "put", "api", False),
                    (c.version, b.version, "put", "api", True),
                    (a.version, c.version, "rollback", "cli", False)]
    listed = keyword_store.list_versions(kw_db)
    assert [v.version for v in listed] == [a.version, c.version, b.version]
    assert listed[1].active == {"opening": 2, "booking": 0, "transaction": 1}
    with pytest.raises(keyword_store.UnknownVersionError):
        keyword_store.rollback(cfg, "f" * 16, redis_client=r)


def test_the_seed_never_replaces_a_version_another_publisher_made_current(settings, kw_db):
    first = KeywordSet.build(CURRENT, "api")
    keyword_store.save_version(kw_db, first, action="put")
    seed = KeywordSet.build(WITHOUT_BOOKING, "default:keywords.csv")
    assert keyword_store.save_version(kw_db, seed, action="seed") is False
    assert keyword_store.current_version_id(kw_db) == first.version
