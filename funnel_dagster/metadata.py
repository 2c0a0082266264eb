"""Metadata the definitions attach to materializations: a classified-messages day's counts,
the funnel's per-channel table, and Markdown cells that cannot break a table."""

import dagster as dg

from funnel_ingest.engine.model import STAGES
from funnel_ingest.report.query import channel_counts


def day_metadata(counts: dict[str, int]) -> dict:
    """A classified_messages partition's metadata: its row count and per-stage counts."""
    return {"dagster/row_count": counts.get("messages", 0),
            **{f"stage_{stage}": counts.get(stage, 0) for stage in STAGES}}


def funnel_metadata(conn) -> dict:
    """The funnel's row count, per-channel counts and a per-channel table."""
    rows = channel_counts(conn)
    table = "| channel | leads | bookings | transactions | value |\n|---|---|---|---|---|\n" + \
        "\n".join(f"| {md_cell(r['channel'])} | {r['leads']} | {r['bookings']} | "
                  f"{r['transactions']} | {r['revenue']:,} |" for r in rows)
    return {"dagster/row_count": sum(r["leads"] for r in rows),
            "by_channel": dg.MetadataValue.md(table),
            **{f"leads_{r['channel']}": r["leads"] for r in rows}}


def md_cell(value: object) -> str:
    """A value as one Markdown table cell (pipes and line breaks would split the table)."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace(
        "\n", " ")
