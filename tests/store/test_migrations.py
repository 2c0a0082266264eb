"""The migration runner: ordered, recorded, idempotent, safe when started concurrently."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from funnel_ingest import db


@pytest.fixture
def fresh_db(settings):
    name = f"funnel_mig_{uuid.uuid4().hex[:10]}"
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    db.ensure_database(url)
    yield url
    db.drop_database(url)


def test_concurrent_runners_apply_each_migration_once(fresh_db):
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: db.migrate(fresh_db), range(6)))
    versions = [m.version for m in db.load_migrations()]
    assert sorted(v for r in results for v in r) == versions
    with psycopg.connect(fresh_db) as conn:
        recorded = [v for (v,) in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert recorded == versions
    assert db.migrate(fresh_db) == []


def test_an_edited_applied_migration_is_refused(fresh_db, tmp_path):
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id int);")
    assert db.migrate(fresh_db, tmp_path) == [1]
    (tmp_path / "001_first.sql").write_text("CREATE TABLE t1 (id bigint);")
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        db.migrate(fresh_db, tmp_path)


def test_a_failing_migration_rolls_back_and_is_not_recorded(fresh_db, tmp_path):
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE ok1 (id int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE bad (id int); SELECT 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        db.migrate(fresh_db, tmp_path)
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT to_regclass('bad')").fetchone()[0] is None
        assert [v for (v,) in conn.execute("SELECT version FROM schema_migrations")] == [1]


def test_misnamed_files_are_reported(tmp_path):
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(db.MigrationError, match="NNN_snake_name"):
        db.load_migrations(tmp_path)


def test_classified_messages_enforce_the_idempotency_key(settings):
    with psycopg.connect(settings.database_url) as conn:
        insert = ("INSERT INTO classified_messages (source, message_id, room_key, direction, "
                  "sender_type, sent_at, message_date, raw_key) VALUES ('test-idem', 'm1', %s, "
                  "'inbound', 'customer', now(), current_date, 'k') ON CONFLICT DO NOTHING")
        assert conn.execute(insert, ("room-a",)).rowcount == 1
        assert conn.execute(insert, ("room-a",)).rowcount == 0
        assert conn.execute(insert, ("room-b",)).rowcount == 1
        conn.rollback()


def test_comments_and_layout_do_not_count_but_string_literals_do(fresh_db, tmp_path):
    path = tmp_path / "001_first.sql"
    path.write_text("-- first table\nCREATE TABLE t1 (id int, note text DEFAULT 'a  b');")
    assert db.migrate(fresh_db, tmp_path) == [1]
    path.write_text("-- the first table, explained better\nCREATE TABLE t1 (\n"
                    "    id   int,   -- the id\n    note text DEFAULT 'a  b'\n);")
    assert db.migrate(fresh_db, tmp_path) == []
    path.write_text("CREATE TABLE t1 (id int, note text DEFAULT 'a b');")
    with pytest.raises(db.MigrationError, match="changed after it was applied"):
        db.migrate(fresh_db, tmp_path)


def test_a_whole_file_checksum_of_an_older_runner_is_upgraded_in_place(fresh_db, tmp_path):
    path = tmp_path / "001_first.sql"
    path.write_text("-- first\nCREATE TABLE t1 (id int);")
    assert db.migrate(fresh_db, tmp_path) == [1]
    (m,) = db.load_migrations(tmp_path)
    with psycopg.connect(fresh_db) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = %s", (m.file_checksum,))
    assert db.migrate(fresh_db, tmp_path) == []
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT checksum FROM schema_migrations").fetchone()[0] == m.checksum


def test_installations_migrated_before_the_comments_were_reworded_still_start(fresh_db):
    """001-003 were applied with whole-file checksums, then only their comments changed."""
    assert db.migrate(fresh_db)
    with psycopg.connect(fresh_db) as conn:
        for version, old in db._FILE_CHECKSUMS_OF_APPLIED.items():
            conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                         (old, version))
    assert db.migrate(fresh_db) == []
    current = {m.version: m.checksum for m in db.load_migrations()}
    with psycopg.connect(fresh_db) as conn:
        assert dict(conn.execute("SELECT version, checksum FROM schema_migrations")) == current


def test_the_recorded_old_checksums_are_of_files_with_the_same_statements():
    """The files as first applied (in git history) hash to the table and match today's SQL."""
    import shutil
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    if not shutil.which("git") or not (root / ".git").exists():
        pytest.skip("needs the repository's git history")
    for m in db.load_migrations():
        if m.version not in db._FILE_CHECKSUMS_OF_APPLIED:
            continue
        shown = subprocess.run(
            ["git", "show", f"9f49b8f:sql/{m.version:03d}_{m.name}.sql"],
            check=False, cwd=root, capture_output=True, text=True,
        )
        if shown.returncode:
            pytest.skip("this clone lacks the commit the migrations were applied from")
        before = db.Migration(m.version, m.name, shown.stdout)
        assert before.file_checksum == db._FILE_CHECKSUMS_OF_APPLIED[m.version]
        assert before.checksum == m.checksum


def test_005_moves_stored_media_out_of_the_channel_hint(fresh_db, tmp_path):
    """Messages stored before media were told apart get their medium; a generic medium label
    stops being a channel hint; a CRM's own label stays one."""
    import shutil

    for m in db.load_migrations():
        if m.version < 5:
            shutil.copy(db.sql_dir() / f"{m.version:03d}_{m.name}.sql", tmp_path)
    assert db.migrate(fresh_db, tmp_path) == [1, 2, 3, 4]
    rows = [("whatsapp", "w1", "ads", None), ("qontak", "q1", None, "wa"),
            ("qontak", "q2", "website", "website"), ("qontak", "q3", None, "ig"),
            ("generic", "g1", "instagram", None), ("generic", "g2", "wa", None),
            ("generic", "g3", "tiktok", None), ("generic", "g4", "website", None)]
    with psycopg.connect(fresh_db) as conn:
        for source, mid, hint, room_channel in rows:
            conn.execute(
                "INSERT INTO classified_messages (source, message_id, direction, sender_type, "
                "sent_at, message_date, raw_key, channel_hint, room_channel) VALUES "
                "(%s, %s, 'inbound', 'customer', now(), current_date, 'k', %s, %s)",
                (source, mid, hint, room_channel))
    assert db.migrate(fresh_db)[0] == 5
    with psycopg.connect(fresh_db) as conn:
        got = dict((mid, (hint, medium)) for mid, hint, medium in conn.execute(
            "SELECT message_id, channel_hint, medium FROM classified_messages"))
    assert got == {"w1": ("ads", "whatsapp"), "q1": (None, "whatsapp"),
                   "q2": ("website", "webchat"), "q3": (None, "instagram"),
                   "g1": (None, "instagram"), "g2": (None, "whatsapp"),
                   "g3": ("tiktok", None), "g4": ("website", None)}


def test_007_seeds_the_campaign_registry_from_stored_messages_and_resolves_the_funnel(
        fresh_db, tmp_path):
    """Ads named by their stored referral's headline and the generic format's campaign labels
    enter the registry; every stored lead gets its resolved campaign, an unknown id as itself."""
    import shutil

    for m in db.load_migrations():
        if m.version < 7:
            shutil.copy(db.sql_dir() / f"{m.version:03d}_{m.name}.sql", tmp_path)
    assert db.migrate(fresh_db, tmp_path) == [1, 2, 3, 4, 5, 6]
    messages = [("whatsapp", "w1", None, "111", '{"source_id": "111", "headline": "Old"}', 1),
                ("whatsapp", "w2", None, "111", '{"source_id": "111", "headline": "Promo\\nBali"}',
                 2),
                ("generic", "g1", "promo-10", None, None, 1),
                ("generic", "g2", None, "222", None, 1),
                ("generic", "g3", "", "", None, 1)]       # empty ids: the format allows them
    leads = [("l1", None, "111"), ("l2", "promo-10", None), ("l3", "wamid.x", None),
             ("l4", None, "222"), ("l5", None, None), ("l6", "", "")]
    with psycopg.connect(fresh_db) as conn:
        for source, mid, campaign, ad, referral, day in messages:
            conn.execute(
                "INSERT INTO classified_messages (source, message_id, direction, sender_type, "
                "sent_at, message_date, raw_key, campaign_id, ad_id, referral) VALUES "
                "(%s, %s, 'inbound', 'customer', %s, current_date, 'k', %s, %s, %s)",
                (source, mid, f"2025-10-0{day}T03:00:00+00", campaign, ad, referral))
        for lead_id, campaign, ad in leads:
            conn.execute(
                "INSERT INTO funnel (lead_id, leads_date, channel, customer_key, cycle, lead_at, "
                "opening_source, opening_message_id, campaign_id, ad_id) VALUES "
                "(%s, current_date, 'ads', %s, 1, now(), 'whatsapp', 'm', %s, %s)",
                (lead_id, lead_id, campaign, ad))
    assert db.migrate(fresh_db)[0] == 7
    with psycopg.connect(fresh_db) as conn:
        registry = set(conn.execute("SELECT campaign, name, kind FROM campaigns"))
        resolved = dict(conn.execute("SELECT lead_id, campaign FROM funnel"))
    assert registry == {("ad:111", "Promo Bali", "ad"), ("ad:222", None, "ad"),
                        ("promo-10", None, "broadcast")}
    assert resolved == {"l1": "ad:111", "l2": "promo-10", "l3": "wamid.x", "l4": "ad:222",
                        "l5": None, "l6": None}
