"""Dagster fixtures: resources on the test stack, a clean engine database and streams."""

from __future__ import annotations

import psycopg
import pytest

from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
from funnel_ingest.store import keywords as keyword_store
from tests.support import dagster_resources, empty_engine_tables


@pytest.fixture
def resources(settings) -> dict:
    return dagster_resources(settings)


@pytest.fixture
def clean(settings, r):
    """Empty engine tables and streams, with the packaged keywords published."""
    with psycopg.connect(settings.database_url) as conn:
        empty_engine_tables(conn)
        kset = KeywordSet.build(load_csv(default_csv_path()), "csv")
        keyword_store.save_version(conn, kset)
        conn.commit()
    yield
