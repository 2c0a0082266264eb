"""Resources: Postgres, Redis, S3 and Google Sheets, configured from the environment.

Secrets stay in environment variables (`EnvVar`), so they never show in the Dagster UI. Each
resource hands out the same clients the API and the CLI use; `funnel_settings` rebuilds the
project's one settings object from them for the engine's functions.
"""


import os
from collections.abc import Callable
from functools import partial
from typing import Any

import dagster as dg
import psycopg
import redis

from funnel_ingest import s3
from funnel_ingest.settings import Settings, get_settings


class PostgresResource(dg.ConfigurableResource):
    """The funnel database (`DATABASE_URL`)."""

    database_url: str

    def connect(self, **kwargs: Any) -> psycopg.Connection:
        return psycopg.connect(self.database_url, **kwargs)


class RedisResource(dg.ConfigurableResource):
    """The Redis holding the message streams and the keyword cache (`REDIS_URL`)."""

    redis_url: str

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=30)


class S3Resource(dg.ConfigurableResource):
    """The S3-compatible store of the raw archive and the reports (MinIO / SeaweedFS)."""

    endpoint_url: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"
    raw_bucket: str = "funnel-raw"
    reports_bucket: str = "funnel-reports"

    def client(self) -> Any:
        return self.client_factory()()

    def client_factory(self) -> Callable[[], Any]:
        """A picklable maker of clients, for worker processes that need their own."""
        return partial(s3.client_for, self.endpoint_url, self.access_key_id,
                       self.secret_access_key, self.region, timeout=30, attempts=3)


class GoogleSheetsResource(dg.ConfigurableResource):
    """The keywords sheet (`GSHEET_KEY`, `GOOGLE_SERVICE_ACCOUNT_FILE`, `GSHEET_WORKSHEET`);
    when no sheet is configured, keywords come from `KEYWORDS_CSV` or the packaged list."""

    sheet_key: str = ""
    service_account_file: str = ""
    worksheet: str = ""
    keywords_csv: str = ""


def funnel_settings(pg: PostgresResource, rds: RedisResource, store: S3Resource,
                    sheets: GoogleSheetsResource | None = None) -> Settings:
    """The project's settings object with the resources' values (other knobs from the env)."""
    base = get_settings()
    values: dict[str, Any] = {
        "database_url": pg.database_url, "redis_url": rds.redis_url,
        "s3_endpoint_url": store.endpoint_url, "s3_access_key_id": store.access_key_id,
        "s3_secret_access_key": store.secret_access_key, "s3_region": store.region,
        "raw_bucket": store.raw_bucket, "reports_bucket": store.reports_bucket,
    }
    if sheets is not None:
        values.update(gsheet_key=sheets.sheet_key,
                      google_service_account_file=sheets.service_account_file,
                      gsheet_worksheet=sheets.worksheet, keywords_csv=sheets.keywords_csv)
    return base.replace(**values)


def _env(name: str, default: str = "") -> Any:
    """An EnvVar when the variable is set (kept out of the UI), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def resources() -> dict[str, Any]:
    defaults = Settings()
    return {
        "postgres": PostgresResource(database_url=_env("DATABASE_URL", defaults.database_url)),
        "redis": RedisResource(redis_url=_env("REDIS_URL", defaults.redis_url)),
        "s3": S3Resource(
            endpoint_url=_env("S3_ENDPOINT_URL", defaults.s3_endpoint_url),
            access_key_id=_env("S3_ACCESS_KEY_ID", defaults.s3_access_key_id),
            secret_access_key=_env("S3_SECRET_ACCESS_KEY",
                                   defaults.s3_secret_access_key.get_secret_value()),
            region=_env("S3_REGION", defaults.s3_region),
            raw_bucket=_env("RAW_BUCKET", defaults.raw_bucket),
            reports_bucket=_env("REPORTS_BUCKET", defaults.reports_bucket)),
        "sheets": GoogleSheetsResource(
            sheet_key=_env("GSHEET_KEY"), service_account_file=_env("GOOGLE_SERVICE_ACCOUNT_FILE"),
            worksheet=_env("GSHEET_WORKSHEET"), keywords_csv=_env("KEYWORDS_CSV")),
    }
