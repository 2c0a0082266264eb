"""Daily partitions by business date in FUNNEL_TIMEZONE."""

from __future__ import annotations

import os

import dagster as dg

from funnel_ingest.settings import get_settings

START_DATE = os.environ.get("FUNNEL_START_DATE", "2025-01-01")

daily = dg.DailyPartitionsDefinition(start_date=START_DATE,
                                     timezone=get_settings().funnel_timezone, end_offset=1)
