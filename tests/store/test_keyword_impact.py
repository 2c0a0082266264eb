"""The impact preview in the store: it never waits for the funnel's writers (it reads a
snapshot and takes no lock), and it tells what it compared when nothing was published yet or
when stored messages were classified by another version."""

from __future__ import annotations

import threading

import psycopg
import pytest

from funnel_ingest.engine.keywords import KeywordSet
from funnel_ingest.store import impact as impact_store
from funnel_ingest.store import keywords as keyword_store
from funnel_ingest.store.funnel import lock_customers, lock_writers
from tests.keyword_cases import CURRENT, WITHOUT_RESERVASI, store_case
from tests.support import empty_engine_tables


@pytest.fixture
def case(settings, r, kw_db):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        empty_engine_tables(conn)
        kset = store_case(conn, settings.tz)
        yield conn, kset
        empty_engine_tables(conn)


def test_a_preview_runs_while_a_writer_holds_every_lock_of_the_funnel(settings, case):
    conn, _ = case
    candidate = KeywordSet.build(WITHOUT_RESERVASI, "test")
    with psycopg.connect(settings.database_url) as writer:
        # what a full rebuild holds, and a drain's customer and row locks, uncommitted writes
        lock_writers(writer, exclusive=True)
        writer.execute("CREATE TEMP TABLE touched_customers AS "
                       "SELECT DISTINCT customer_key FROM classified_messages")
        lock_customers(writer)
        writer.execute("UPDATE classified_messages SET stages = '{}'")
        writer.execute("DELETE FROM funnel")
        writer.execute("SELECT pg_advisory_xact_lock(%s)", (keyword_store.PUBLISH_LOCK_ID,))
        done: list[impact_store.Impact] = []
        with psycopg.connect(settings.database_url, autocommit=True) as reader:
            reader.execute("SET statement_timeout = '10s'")  # a wait would fail, not hang
            thread = threading.Thread(target=lambda: done.append(impact_store.preview(
                reader, candidate, tz=settings.tz)))
            thread.start()
            thread.join(30)
        assert done, "the preview waited for the writer"
        # the committed state, not the writer's uncommitted one
        assert done[0].changed_messages == 6 and done[0].total.before.leads == 8
        writer.rollback()


def test_a_preview_before_any_publication_compares_with_no_keywords(settings, case):
    conn, _ = case
    conn.execute("DELETE FROM keyword_versions")
    impact = impact_store.preview(conn, KeywordSet.build(CURRENT, "test"), tz=settings.tz)
    assert impact.current_version is None and impact.emptied_stages == []
    assert impact.stale_messages == impact.messages == 17
    assert impact.stages["booking"] == (0, 8)
    assert impact.total.change.leads == 0  # every customer still opens a lead: their first message


def test_messages_classified_by_another_version_are_counted_as_stale(settings, case):
    conn, kset = case
    conn.execute("UPDATE classified_messages SET keyword_version = 'older' "
                 "WHERE message_id LIKE 'wamid.kw1-%'")
    impact = impact_store.preview(conn, kset, tz=settings.tz)
    assert impact.stale_messages == 2 and impact.changed_messages == 0
