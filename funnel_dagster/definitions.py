"""The `funnel_dagster` code location: ingest -> keywords -> classified messages -> funnel ->
CSV report, fed near-real-time by the stream sensor (see `defs/`)."""

from __future__ import annotations

import warnings

import dagster as dg

from funnel_ingest import db
from funnel_ingest.settings import get_settings

from .defs import assets, checks, drain, replay, schedules
from .defs.resources import resources


def _migrate() -> None:
    """The schema the assets write to (idempotent; a no-op when up to date)."""
    try:
        db.migrate(get_settings().database_url)
    except Exception as exc:  # the UI must load even while Postgres is down
        import logging
        logging.getLogger(__name__).warning("migrations not applied: %s", exc)


_migrate()
warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy, sensor owners

defs = dg.Definitions(
    assets=[assets.raw_archive, assets.message_stream, assets.keywords,
            assets.classified_messages, assets.funnel, assets.funnel_report_csv],
    asset_checks=checks.ALL_CHECKS,
    jobs=[drain.drain_job, schedules.keywords_job, schedules.report_job, schedules.checks_job,
          schedules.run_history_cleanup_job, replay.replay_archive_job],
    sensors=[drain.message_stream_sensor],
    schedules=[schedules.keywords_schedule, schedules.checks_schedule,
               schedules.daily_report_schedule, schedules.run_history_cleanup_schedule,
               replay.replay_archive_schedule],
    resources=resources(),
)
