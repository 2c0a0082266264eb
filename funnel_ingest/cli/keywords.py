"""`funnel keywords ...`: sync the keyword list from the sheet / CSV, show the current one.

    funnel keywords sync [--source auto|sheet|csv] [--csv PATH]
    funnel keywords show [--json]

Wired into `funnel_ingest/cli/__init__.py` by `keywords.add_parsers(sub)` in `build_parser()`.
Exit codes: 0 done, 1 failed (one line on stderr naming the bad rows or the failing source).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from funnel_ingest.cli._common import err, load_settings, one_line

if TYPE_CHECKING:  # psycopg is imported by the commands, not when the CLI starts
    import psycopg





def _store_error(cmd: str, exc: psycopg.Error) -> int:
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedTable):
        err(f"funnel keywords {cmd}: the keyword tables do not exist; run `funnel migrate`")
    else:
        err(f"funnel keywords {cmd}: Postgres unavailable: {one_line(exc)}")
    return 1


def cmd_sync(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.engine.keywords import KeywordSetError
    from funnel_ingest.store import keywords as keyword_store
    from funnel_ingest.store.sheets import KeywordSourceError, SheetError

    source = args.source
    if args.csv and source == "sheet":
        err("funnel keywords sync: --csv cannot be used with --source sheet")
        return 1
    try:
        result = keyword_store.sync(load_settings(), source=source, csv_path=args.csv)
    except SheetError as exc:
        err(f"funnel keywords sync: Google Sheet ({exc.reason}): {one_line(exc.detail)}; "
             "the previous version stays current")
        return 1
    except KeywordSourceError as exc:
        err(f"funnel keywords sync: {one_line(exc.detail)}; the previous version stays current")
        return 1
    except KeywordSetError as exc:
        err(f"funnel keywords sync: {one_line(exc)}; the previous version stays current")
        return 1
    except psycopg.Error as exc:
        return _store_error("sync", exc)
    state = "now current" if result.changed else "unchanged (already current)"
    print(f"keyword version {result.version}: {result.row_count} keywords from "
          f"{result.source}, {state}")
    for warning in result.warnings:
        err(f"warning: {warning}")
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_show(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.store import keywords as keyword_store

    try:
        with psycopg.connect(load_settings().database_url, connect_timeout=5,
                             autocommit=True) as conn:
            kset = keyword_store.current_version(conn)
    except psycopg.Error as exc:
        return _store_error("show", exc)
    if kset is None:
        err("funnel keywords show: no keyword version published yet; run `funnel keywords sync`")
        return 1
    if args.json:
        doc: dict[str, Any] = {"version": kset.version, "source": kset.source,
                               "created_at": kset.created_at.isoformat(),
                               "row_count": len(kset.keywords), "warnings": list(kset.warnings),
                               "keywords": kset.items()}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    print(f"version  {kset.version}")
    print(f"source   {kset.source}")
    print(f"created  {kset.created_at.isoformat(timespec='seconds')}")
    print(f"keywords {len(kset.keywords)} "
          f"({sum(1 for k in kset.keywords if k.active)} active)")
    print()
    rows = [[k.stage, k.keyword, k.channel or "-", "yes" if k.active else "no"]
            for k in kset.keywords]
    print(_table(rows, ["stage", "keyword", "channel", "active"]))
    return 0


def add_parsers(subparsers: Any) -> argparse.ArgumentParser:
    """Register `keywords sync` and `keywords show` on the `funnel` parser's subparsers."""
    kw = subparsers.add_parser("keywords", help="sync or show the keyword list",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = kw.add_subparsers(dest="keywords_command", required=True)
    sync = sub.add_parser("sync", help="pull the keywords from the Google Sheet or the CSV, "
                                       "validate and publish them")
    sync.add_argument("--source", choices=("auto", "sheet", "csv"), default="auto",
                      help="auto (default): the sheet when GSHEET_KEY is set, else the CSV")
    sync.add_argument("--csv", metavar="PATH", default=None,
                      help="read this CSV (default: KEYWORDS_CSV, else the packaged list)")
    sync.set_defaults(func=cmd_sync)
    show = sub.add_parser("show", help="print the current keyword version")
    show.add_argument("--json", action="store_true", help="JSON instead of a table")
    show.set_defaults(func=cmd_show)
    return kw
