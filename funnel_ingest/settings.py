"""The one settings object: every knob comes from an environment variable.

The names are the operator-facing contract (README, `.env.example`, `funnel status --env`).
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from funnel_ingest.engine.cycles import CycleRules

# The variables `funnel status --env` prints and `.env.example` documents, in order.
ENV_NAMES: tuple[str, ...] = (
    "DATABASE_URL",
    "REDIS_URL",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_REGION",
    "RAW_BUCKET",
    "REPORTS_BUCKET",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "WEBHOOK_TOKEN",
    "WEBHOOK_HMAC_SECRET",
    "WEBHOOK_REQUIRE_SIGNATURE",
    "API_KEY",
    "FUNNEL_TIMEZONE",
    "STREAM_SHARDS",
    "KEYWORDS_CSV",
    "GSHEET_KEY",
    "GOOGLE_SERVICE_ACCOUNT_FILE",
    "GSHEET_WORKSHEET",
    "LEAD_WINDOW_DAYS",
    "CSV_SPREADSHEET_SAFE",
    "FUNNEL_START_DATE",
    "S3_PUBLIC_URL",
    "REPORT_LINK_TTL_SECONDS",
)

CONVERSION_EVENTS = ("LeadSubmitted", "Schedule", "Purchase")
"""The events the conversions outbox queues (sql/008_conversion_events.sql)."""


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (and an optional `.env` file)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    # stores
    database_url: str = "postgresql://postgres@127.0.0.1:5432/funnel"
    redis_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint_url: str = "http://127.0.0.1:8333"
    s3_access_key_id: str = "funnel"
    s3_secret_access_key: SecretStr = SecretStr("funnel-secret-key")
    s3_region: str = "us-east-1"
    raw_bucket: str = "funnel-raw"
    reports_bucket: str = "funnel-reports"

    # webhook authentication (empty = that authentication method is disabled)
    whatsapp_app_secret: SecretStr = SecretStr("")
    whatsapp_verify_token: SecretStr = SecretStr("")
    webhook_token: SecretStr = SecretStr("")
    webhook_hmac_secret: SecretStr = SecretStr("")
    api_key: SecretStr = SecretStr("")
    webhook_require_signature: bool = Field(
        default=False, description="CRM routes refuse the shared token alone: every request "
                                   "must carry X-Webhook-Signature (needs WEBHOOK_HMAC_SECRET)")

    # keywords: a Google Sheet when GSHEET_KEY is set, else the CSV file
    keywords_csv: str = ""  # empty = the packaged default list (funnel_ingest/data/keywords.csv)
    gsheet_key: str = ""
    google_service_account_file: str = ""
    gsheet_worksheet: str = ""  # empty = the first worksheet

    # behaviour
    funnel_timezone: str = "Asia/Jakarta"
    lead_window_days: int = Field(default=30, ge=1, le=3650)
    quiet_hours_after_payment: float = Field(
        default=24.0, ge=0, le=24 * 365,
        description="after a lead's last payment, a greeting opens a new lead only this many "
                    "hours later (or sooner with a marketing signal: an ad, a campaign, a "
                    "channel's prefilled text)")
    stream_shards: int = Field(default=1, ge=1, le=1024)
    stream_prefix: str = "funnel:messages"
    status_stream: str = "funnel:statuses"
    deadletter_stream: str = "funnel:deadletter"
    stream_maxlen: int = Field(default=0, ge=0, description="0 = never trim on append")
    max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    # HTTP edge of `funnel api` (the server bounds headers; funnel_ingest/api/edge.py bodies)
    http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=3600, description="a client must send its request headers within "
                                                 "this time, else the connection is closed")
    http_max_header_bytes: int = Field(
        default=64 * 1024, ge=8192, description="request line + headers larger than this get 431")
    http_max_connections: int = Field(
        default=4096, ge=16, description="connections a worker serves at once; more wait in "
                                         "the kernel's accept queue")
    http_body_timeout_seconds: float = Field(
        default=20.0, gt=0, description="a request body must arrive within this time, else 408")
    http_max_reading: int = Field(
        default=64, ge=1, description="request bodies read at once per worker; past it 503")
    http_retry_after_seconds: int = Field(
        default=2, ge=0, description="Retry-After of the 503 past HTTP_MAX_READING")
    dedupe_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=0)
    room_ttl_seconds: int = Field(
        default=90 * 24 * 3600, ge=0, description="a room's customer stays in Redis this long "
                                                   "after its last message (0 = forever)")
    archive_batch_ms: float = Field(default=20.0, ge=0)
    archive_batch_max: int = Field(default=256, ge=1)
    archive_timeout_seconds: float = Field(
        default=8.0, gt=0, description="a request waiting longer for its archive PUT gets 503")
    archive_writers: int = Field(default=2, ge=1, le=64, description="concurrent PUTs per source")
    log_level: str = "INFO"
    api_workers: int = Field(default=0, ge=0, description="`funnel api` worker processes; "
                                                          "0 = one per usable CPU")

    # reports
    csv_spreadsheet_safe: bool = Field(
        default=True, description="CSV cells starting with = + - @ tab CR get a leading "
                                  "apostrophe (spreadsheet formula injection); false = exact")

    # Dagster
    funnel_start_date: str = Field(
        default="", description="first daily partition (YYYY-MM-DD); empty = the first day "
                                "with data in Postgres or the raw archive")
    s3_public_url: str = Field(
        default="", description="S3 endpoint as a person's browser reaches it, for the report "
                                "links in Dagster; empty = S3_ENDPOINT_URL")
    funnel_run_retention_days: int = Field(
        default=14, ge=0, description="drain runs older than this are deleted from Dagster's "
                                      "history (daily cleanup schedule)")
    funnel_max_backlog: int = Field(
        default=100_000, ge=0, description="the stream backlog check warns above this many entries")
    funnel_max_backlog_age_seconds: float = Field(
        default=300.0, ge=0, description="... or when the oldest entry is older than this")
    report_link_ttl_seconds: int = Field(
        default=7 * 24 * 3600, ge=60, le=7 * 24 * 3600,
        description="lifetime of a report's presigned link (S3 allows at most 7 days)")

    # Meta Conversions API (docs/conversions.md): off until the dataset, its token and the
    # WhatsApp Business Account are all set
    meta_capi_dataset_id: str = Field(
        default="", description="the dataset (pixel) id the funnel's events are posted to")
    meta_capi_access_token: SecretStr = Field(
        default=SecretStr(""), description="access token allowed to post to that dataset")
    whatsapp_business_account_id: str = Field(
        default="", description="the WhatsApp Business Account (WABA) the ads lead to")
    meta_capi_test_event_code: str = Field(
        default="", description="Events Manager's test code: events show under Test Events "
                                "only; empty in production")
    meta_graph_url: str = Field(default="https://graph.facebook.com",
                                description="the Graph API's base URL (tests: a local server)")
    meta_graph_version: str = Field(default="v25.0", pattern=r"^v\d+\.\d+$",
                                    description="the Graph API version in the request path")
    conversions_events: str = Field(
        default="LeadSubmitted,Schedule,Purchase",
        description="the event names sent (comma-separated); others stay pending until they "
                    "expire")
    conversions_batch_size: int = Field(default=1000, ge=1, le=1000,
                                        description="events per request (Meta takes 1000)")
    conversions_max_attempts: int = Field(
        default=10, ge=1, le=100, description="an event refused this many times is failed")
    conversions_retry_base_seconds: float = Field(
        default=60.0, gt=0, description="the wait after a first failed attempt; doubled after "
                                        "each further one ...")
    conversions_retry_max_seconds: float = Field(
        default=3600.0, gt=0, description="... up to this many seconds")
    conversions_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="a request to Meta without an answer within "
                                                "this time is a failed attempt")
    conversions_claim_seconds: float = Field(
        default=300.0, gt=0, description="a delivery's claim on its batch runs out after this "
                                         "long (a killed delivery's events are sent again then)")
    conversions_max_event_age_hours: float = Field(
        default=167.0, gt=0, le=168, description="older events are expired, never sent (Meta "
                                                 "refuses a request with one older than 7 days)")

    # tooling
    funnel_sql_dir: str = Field(default="", description="the schema migrations' folder; empty = "
                                                        "the repository's (or image's) sql/")
    funnel_state_dir: str = Field(default="", description="the local stack's state; empty = "
                                                          "./.funnel")
    funnel_api_url: str = Field(default="http://127.0.0.1:8000",
                                description="where `funnel send-mock` posts")
    funnel_debug: bool = Field(default=False, description="CLI errors as tracebacks")

    @field_validator("funnel_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Asia/Jakarta)") from None
        return value

    @field_validator("funnel_start_date")
    @classmethod
    def _iso_date(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a date like 2025-01-31") from None
        return value

    @field_validator("meta_capi_dataset_id", "whatsapp_business_account_id")
    @classmethod
    def _meta_id(cls, value: str) -> str:
        value = value.strip()
        if value and not value.isdigit():
            raise ValueError(f"{value!r} is not a Meta id (digits only)")
        return value

    @field_validator("conversions_events")
    @classmethod
    def _event_names(cls, value: str) -> str:
        names = [n.strip() for n in value.split(",") if n.strip()]
        unknown = [n for n in names if n not in CONVERSION_EVENTS]
        if unknown:
            raise ValueError(f"unknown event name(s) {', '.join(unknown)} (known: "
                             f"{', '.join(CONVERSION_EVENTS)})")
        return ",".join(names)

    @property
    def conversions_enabled(self) -> bool:
        """The Conversions API feedback is on: dataset, token and business account are set."""
        return bool(self.meta_capi_dataset_id and self.whatsapp_business_account_id
                    and self.meta_capi_access_token.get_secret_value())

    @property
    def conversion_event_names(self) -> tuple[str, ...]:
        return tuple(n for n in self.conversions_events.split(",") if n)

    @property
    def start_date(self) -> date | None:
        """FUNNEL_START_DATE as a date (None: derive it from the data)."""
        return date.fromisoformat(self.funnel_start_date) if self.funnel_start_date else None

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.funnel_timezone)

    @property
    def cycle_rules(self) -> CycleRules:
        """The lead-cycle settings, for the engine."""
        from funnel_ingest.engine.cycles import CycleRules
        return CycleRules(self.lead_window_days, self.quiet_hours_after_payment)

    def replace(self, **changes: object) -> Settings:
        """A validated copy with some values changed (values given here win over the environment)."""
        return type(self)(**{**self.model_dump(), **changes})

    def stream_key(self, shard: int) -> str:
        """Stream name of one shard: `funnel:messages` when unsharded, else `funnel:messages:{n}`."""
        if self.stream_shards == 1:
            return self.stream_prefix
        return f"{self.stream_prefix}:{shard}"

    def stream_keys(self) -> list[str]:
        return [self.stream_key(n) for n in range(self.stream_shards)]

    def as_env(self) -> dict[str, str]:
        """The settings as `NAME=value` pairs (secrets revealed: this is for the operator's shell)."""
        out: dict[str, str] = {}
        for name in ENV_NAMES:
            value = getattr(self, name.lower())
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[name] = str(value).lower() if isinstance(value, bool) else str(value)
        return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
