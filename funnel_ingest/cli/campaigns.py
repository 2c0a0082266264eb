"""`funnel campaigns ...`: name campaigns from a CRM's broadcast log, list the campaigns.

    funnel campaigns import FILE [--format csv|json]
    funnel campaigns list [--limit N] [--json]

`import` reads a CSV broadcast log (header row: `campaign` and one of `message_id`,
`template`, `broadcast_id`, `ad_id`, optionally `sent`) or a JSON array of the same entries (as
PUT /campaigns takes them), and applies it as the API does (`store.funnel.import_campaigns`).
`list` prints every campaign with its leads, bookings, transactions, revenue and reply rate
(as GET /campaigns).

Wired into `funnel_ingest/cli/__init__.py` by `campaigns.add_parsers(sub)` in `build_parser()`.
Exit codes: 0 done, 1 failed (one line on stderr: the bad entries, or the failing store), 2 bad
arguments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from funnel_ingest.cli._common import err, load_settings, one_line


def _store_error(cmd: str, exc: Exception) -> int:
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedTable):
        err(f"funnel campaigns {cmd}: the campaign tables do not exist; run `funnel migrate`")
    else:
        err(f"funnel campaigns {cmd}: Postgres unavailable: {one_line(exc)}")
    return 1


def cmd_import(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.engine.campaigns import (
        CampaignImportError,
        from_csv_text,
        from_json_items,
    )
    from funnel_ingest.store.funnel import import_campaigns

    path = Path(args.file)
    fmt = args.format or ("json" if path.suffix.casefold() == ".json" else "csv")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        err(f"funnel campaigns import: cannot read {path}: {one_line(exc)}")
        return 1
    warnings: list[str] = []
    try:
        if fmt == "json":
            try:
                items = json.loads(text)
            except ValueError as exc:
                err(f"funnel campaigns import: {path} is not JSON: {one_line(exc)}")
                return 1
            entries = from_json_items(items)
        else:
            entries = from_csv_text(text, warnings)
    except CampaignImportError as exc:
        err(f"funnel campaigns import: {path}: {one_line(exc)}; nothing was imported")
        return 1
    try:
        with psycopg.connect(load_settings().database_url, connect_timeout=5,
                             autocommit=True) as conn:
            result = import_campaigns(conn, entries)
    except psycopg.Error as exc:
        return _store_error("import", exc)
    for warning in warnings:
        err(f"warning: {warning}")
    print(f"imported {result.entries:,} entries of {result.campaigns:,} campaigns from {path}: "
          f"{result.added:,} refs added, {result.moved:,} moved, {result.removed:,} campaigns "
          f"removed, {result.leads_updated:,} leads updated")
    return 0


def _rate(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}".replace(",", ".")


def cmd_list(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.report.campaigns import campaign_figures

    try:
        with psycopg.connect(load_settings().database_url, connect_timeout=5,
                             autocommit=True) as conn:
            data = campaign_figures(conn, args.limit)
    except psycopg.Error as exc:
        return _store_error("list", exc)
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, default=str))
        return 0
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"Campaigns ({data['total']:,}, the most leads first)",
                  title_justify="left")
    for column in ("campaign", "name", "kind", "sent", "leads", "bookings", "transactions",
                   "revenue", "reply rate"):
        table.add_column(column, justify="right" if column not in ("campaign", "name", "kind")
                         else "left")
    for c in data["campaigns"]:
        # names and keys are CRM- and sender-chosen text: printed as text, never as markup
        table.add_row(escape(c["campaign"]), escape(c["name"] or "(unknown)"),
                      c["kind"] or "-", _int(c["sent"]), _int(c["leads"]), _int(c["bookings"]),
                      _int(c["transactions"]), f"Rp {_int(c['revenue'])}",
                      _rate(c["reply_rate"]))
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)
    if data["omitted"]:
        err(f"{data['omitted']:,} more campaigns not listed (--limit)")
    return 0


def add_parsers(subparsers: Any) -> argparse.ArgumentParser:
    """Register `campaigns import` and `campaigns list` on the `funnel` parser's subparsers."""
    cp = subparsers.add_parser("campaigns", help="name campaigns from a broadcast log, list them",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = cp.add_subparsers(dest="campaigns_command", required=True)
    imp = sub.add_parser("import", help="apply a CRM's broadcast log (CSV) or JSON entries")
    imp.add_argument("file", metavar="FILE", help="the CSV (or .json) file")
    imp.add_argument("--format", choices=("csv", "json"), default=None,
                     help="default: json for a .json file, else csv")
    imp.set_defaults(func=cmd_import)
    ls = sub.add_parser("list", help="every campaign with its leads and reply rate")
    ls.add_argument("--limit", type=int, default=1000, help="campaigns listed (%(default)s)")
    ls.add_argument("--json", action="store_true", help="JSON instead of a table")
    ls.set_defaults(func=cmd_list)
    return cp
