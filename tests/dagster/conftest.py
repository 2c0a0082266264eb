"""Dagster fixtures: resources on the test stack, a clean engine database and streams."""

from __future__ import annotations

import psycopg
import pytest

from funnel_dagster.defs.resources import (GoogleSheetsResource, PostgresResource, RedisResource,
                                           S3Resource)
from funnel_ingest.engine import keyword_store
from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv

from ..conftest import empty_engine_tables


def dagster_resources(settings) -> dict:
    """The code location's resources on `settings` (the test stack's by default)."""
    return {
        "postgres": PostgresResource(database_url=settings.database_url),
        "redis": RedisResource(redis_url=settings.redis_url),
        "s3": S3Resource(endpoint_url=settings.s3_endpoint_url,
                         access_key_id=settings.s3_access_key_id,
                         secret_access_key=settings.s3_secret_access_key.get_secret_value(),
                         region=settings.s3_region, raw_bucket=settings.raw_bucket,
                         reports_bucket=settings.reports_bucket),
        "sheets": GoogleSheetsResource(),
    }


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
