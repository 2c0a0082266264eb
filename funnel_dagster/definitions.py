"""The `funnel_dagster` code location: ingest -> keywords -> classified messages -> funnel ->
CSV report, fed near-real-time by the stream sensor.

The definitions are loaded from `defs/`, one module per kind (assets, checks, jobs, sensors,
schedules; partitions and resources beside them), the way Dagster's project scaffold loads
them: a new definition in one of those modules is part of the code location without being
listed anywhere. Loading applies the schema migrations first (the partitions' start date
reads the tables), when the code location is loaded, not when this module is imported.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import dagster as dg

from funnel_ingest import db
from funnel_ingest.settings import get_settings

warnings.filterwarnings("ignore", category=dg.BetaWarning)  # backfill_policy, sensor owners
log = logging.getLogger(__name__)


def _migrate() -> None:
    """The schema the assets write to (idempotent; a no-op when up to date)."""
    try:
        db.migrate(get_settings().database_url)
    except Exception as exc:  # the UI must load even while Postgres is down
        log.warning("migrations not applied: %s", exc)


@dg.definitions
def defs() -> dg.Definitions:
    _migrate()
    from funnel_dagster.defs.resources import resources

    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=Path(__file__).resolve().parent),
        dg.Definitions(
            resources=resources(),
            # Every job runs its steps in the run worker's own process. Each job here is one or
            # two small steps that talk to Postgres/S3 (the asset checks four quick queries):
            # the multiprocess default would start a Python process, and load this code
            # location again, per step, which costs more than the steps. Assets and ops hand
            # nothing to each other in memory (they return MaterializeResult / Nothing; the
            # data is in Postgres and S3), so no IO manager is involved and any executor would
            # be correct.
            executor=dg.in_process_executor,
        ),
    )
