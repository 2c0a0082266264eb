"""The `funnel_dagster` code location: ingest -> keywords -> classified messages -> funnel ->
CSV report, fed near-real-time by the stream sensor (see `defs/`)."""

from __future__ import annotations

import warnings

import dagster as dg

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy, sensor owners

from funnel_ingest import db  # noqa: E402
from funnel_ingest.settings import get_settings  # noqa: E402


def _migrate() -> None:
    """The schema the assets write to (idempotent; a no-op when up to date)."""
    try:
        db.migrate(get_settings().database_url)
    except Exception as exc:  # the UI must load even while Postgres is down
        import logging
        logging.getLogger(__name__).warning("migrations not applied: %s", exc)


_migrate()  # before the definitions: the partitions' start date reads the tables

from funnel_dagster.defs import assets, checks, drain, replay, schedules  # noqa: E402
from funnel_dagster.defs.resources import resources  # noqa: E402

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
    # Every job runs its steps in the run worker's own process. Each job here is one or two
    # small steps that talk to Postgres/S3 (the asset checks four quick queries): the
    # multiprocess default would start a Python process, and load this code location again,
    # per step, which costs more than the steps. Assets and ops hand nothing to each other
    # in memory (they return MaterializeResult / Nothing; the data is in Postgres and S3), so
    # no IO manager is involved and any executor would be correct.
    executor=dg.in_process_executor,
)
