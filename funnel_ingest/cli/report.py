"""`funnel send-mock | export | report`: sample traffic into a running API, the funnel report
to a file or S3, the funnel summary in the terminal.

    funnel send-mock [--url URL] [--count N] [--rate PER_S] [--concurrency N]
                     [--sources whatsapp,qontak,generic] [--seed N] [--days N]
    funnel export    [--from DATE] [--to DATE] [--channel C]... [--campaign C] [--medium M]...
                     [--format csv|parquet] [--output PATH | s3://BUCKET/KEY]
    funnel report    [--from DATE] [--to DATE] [--channel C]... [--campaign C] [--medium M]...
                     [--daily] [--json]

Settings come from the environment (and `.env`); where `funnel up` ran (a `.funnel/env`), the
local stack's settings and secrets fill in what the environment does not set. `send-mock`
posts simulated conversations (`simulate/traffic.py`) signed as each provider signs them to
`--url` (default `FUNNEL_API_URL`, else http://127.0.0.1:8000). `export` and `report` read
Postgres directly, with the same query and columns as `GET /funnel-report`.

Wired into `funnel_ingest/cli/__init__.py` by `report.add_parsers(sub)` in `build_parser()`.
Exit codes: 0 done, 1 failed (or some webhooks were not accepted), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from funnel_ingest.cli._common import err, load_settings
from funnel_ingest.messages import SOURCES

if TYPE_CHECKING:  # heavy imports happen in the commands, not when the CLI starts
    from rich.progress import Progress

    from funnel_ingest.report.query import ReportFilter

DEFAULT_OUTPUT = "funnel_report.csv"




def _progress(enabled: bool) -> Progress:
    """A progress bar on stderr (rich); `enabled=False` shows nothing."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TaskProgressColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=Console(stderr=True), disable=not enabled)


# ---------------------------------------------------------------------------------------------
# send-mock




def cmd_send_mock(args: argparse.Namespace) -> int:
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if not sources or any(s not in SOURCES for s in sources):
        err(f"funnel send-mock: --sources takes a comma-separated subset of {','.join(SOURCES)}")
        return 2
    settings = load_settings()
    env = settings.as_env()
    if "whatsapp" in sources and not env["WHATSAPP_APP_SECRET"]:
        err("funnel send-mock: WHATSAPP_APP_SECRET is not set (the API's secret signs "
             "WhatsApp bodies); run `funnel up` or set it, or leave whatsapp out of --sources")
        return 1
    if set(sources) - {"whatsapp"} and not (env["WEBHOOK_TOKEN"] or env["WEBHOOK_HMAC_SECRET"]):
        err("funnel send-mock: WEBHOOK_TOKEN or WEBHOOK_HMAC_SECRET is not set (the API's "
             "secret for Qontak and generic webhooks); run `funnel up` or set one")
        return 1
    from funnel_ingest.simulate.sender import send_all
    from funnel_ingest.simulate.traffic import mock_samples

    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    url = (args.url or settings.funnel_api_url).rstrip("/")
    err(f"sending {args.count:,} simulated webhooks ({', '.join(sources)}; seed {seed}) to "
         f"{url}" + (f" at up to {args.rate:g}/s" if args.rate else ""))
    samples = mock_samples(args.count, seed=seed, sources=sources, days=args.days)
    with _progress(not args.no_progress) as progress:
        task = progress.add_task("webhooks", total=args.count)
        rejected = 0

        def on_result(code: int) -> None:
            nonlocal rejected
            rejected += not 200 <= code < 300
            progress.update(task, advance=1,
                            description=f"webhooks ({rejected} not accepted)" if rejected
                            else "webhooks")

        report = asyncio.run(send_all(url, samples, env, concurrency=args.concurrency,
                                       rate=args.rate, on_result=on_result))
    others = {code: n for code, n in sorted(report.statuses.items()) if not 200 <= code < 300}
    ms = [report.percentile(p) * 1000 for p in (50, 95, 99, 100)]
    print(f"sent:      {report.sent:,} webhooks in {report.seconds:.2f} s "
          f"({report.sent / max(report.seconds, 1e-9):,.0f}/s)")
    print(f"accepted:  {report.accepted:,} (2xx)")
    print(f"rejected:  {sum(others.values()):,}"
          + (" (" + ", ".join(f"{'no answer' if c == 0 else c}: {n}" for c, n in others.items())
             + ")" if others else ""))
    print(f"latency:   p50 {ms[0]:.1f} ms, p95 {ms[1]:.1f} ms, p99 {ms[2]:.1f} ms, "
          f"max {ms[3]:.1f} ms")
    print(f"messages:  {report.messages:,} appended, {report.duplicates:,} redeliveries")
    return 0 if report.sent and report.accepted == report.sent else 1


def _filter_from(args: argparse.Namespace, cmd: str) -> ReportFilter | None:
    from funnel_ingest.report.query import FilterError, ReportFilter

    try:
        return ReportFilter(args.start, args.end, tuple(args.channel or ()), args.campaign,
                            tuple(args.medium or ()))
    except FilterError as exc:
        err(f"funnel {cmd}: {exc}")
        return None


def cmd_export(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.report.export import export, s3_target

    filt = _filter_from(args, "export")
    if filt is None:
        return 2
    fmt = args.format or ("parquet" if args.output.endswith((".parquet", ".pq")) else "csv")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            err("funnel export: Parquet needs pyarrow (pip install 'pyarrow>=16,<25')")
            return 1
    try:
        s3_target(args.output)
    except ValueError as exc:
        err(f"funnel export: {exc}")
        return 2
    settings = load_settings()
    started = time.perf_counter()
    try:
        with _progress(not args.no_progress) as bar:
            task = bar.add_task("rows", total=None)
            rows = export(settings, filt, args.output, fmt,
                          spreadsheet_safe=False if args.exact_values else None,
                          on_total=lambda total: bar.update(task, total=total),
                          on_rows=lambda n: bar.update(task, advance=n)).rows
    except psycopg.Error as exc:
        err(f"funnel export: Postgres: {' '.join(str(exc).split())}")
        return 1
    seconds = time.perf_counter() - started
    size = "" if args.output.startswith("s3://") else \
        f", {Path(args.output).stat().st_size / 1e6:,.1f} MB"
    span = f"{filt.start or 'first'} .. {filt.end or 'last'}"
    print(f"wrote {rows:,} leads ({span}) as {fmt} to {args.output}{size} in {seconds:.1f} s")
    return 0


# ---------------------------------------------------------------------------------------------
# report


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _int(x: int) -> str:
    return f"{x:,}".replace(",", ".")  # Indonesian grouping, as the dashboard shows it


def _money(x: int | None) -> str:
    return "-" if x is None else f"Rp {_int(x)}"


def figures_row(f: dict[str, Any]) -> list[str]:
    """One summary (`report.StageSummary.as_dict()`) as table cells."""
    c, b, t = f["conversion"], f["lead_to_booking_seconds"], f["lead_to_transaction_seconds"]
    return [_int(f["leads"]), _int(f["bookings"]), _int(f["transactions"]),
            _pct(c["lead_to_booking"]), _pct(c["booking_to_transaction"]),
            _pct(c["lead_to_transaction"]), _money(f["revenue"]["sum"]),
            _money(f["revenue"]["average"]), f"{_duration(b['median'])} / {_duration(b['p90'])}",
            f"{_duration(t['median'])} / {_duration(t['p90'])}"]


FIGURE_HEADERS = ("leads", "bookings", "transactions", "lead>booking", "booking>tx",
                  "lead>tx", "revenue", "average", "lead>booking p50/p90", "lead>tx p50/p90")


def cmd_report(args: argparse.Namespace) -> int:
    import psycopg
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from funnel_ingest.report import query as report

    filt = _filter_from(args, "report")
    if filt is None:
        return 2
    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            report.configure_session(conn)
            data: Any = report.daily(conn, filt) if args.daily else report.summary(conn, filt)
    except psycopg.Error as exc:
        err(f"funnel report: Postgres: {' '.join(str(exc).split())}")
        return 1
    if args.json:
        print(json.dumps({"filters": {**filt.as_dict(), "timezone": settings.funnel_timezone},
                          "days" if args.daily else "summary": data}, indent=2))
        return 0
    span = f"{filt.start or 'first'} .. {filt.end or 'last'}"
    # labels are CRM- and sheet-chosen text: printed as text, never as console markup
    extra = "".join(f", {k} {escape(v)}" for k, v in (("channels", ",".join(filt.channels)),
                                                       ("campaign", filt.campaign),
                                                       ("mediums", ",".join(filt.mediums))) if v)
    table = Table(title=f"Funnel, lead dates {span} ({settings.funnel_timezone}{extra})",
                  title_justify="left")
    keys = ("date", "channel") if args.daily else ("channel",)
    for k in keys:
        table.add_column(k)
    for h in FIGURE_HEADERS:
        table.add_column(h, justify="right")
    if args.daily:
        for d in data:
            table.add_row(d["leads_date"], escape(d["channel"]), *figures_row(d))
    else:
        for c in data["by_channel"]:
            table.add_row(escape(c["channel"]), *figures_row(c))
        table.add_section()
        table.add_row("all channels", *figures_row(data["total"]), style="bold")
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    console.print(table)
    if not (data if args.daily else data["by_channel"]):
        err("no leads for these filters")
    return 0


# ---------------------------------------------------------------------------------------------
# wiring


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date (YYYY-MM-DD)") from None


def _filter_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--from", dest="start", type=_date, default=None, metavar="DATE",
                   help="first lead date (YYYY-MM-DD, FUNNEL_TIMEZONE; default: the first)")
    p.add_argument("--to", dest="end", type=_date, default=None, metavar="DATE",
                   help="last lead date, inclusive (default: the last)")
    p.add_argument("--channel", action="append", metavar="CHANNEL",
                   help="only this channel (repeatable; default: every channel)")
    p.add_argument("--campaign", default=None, metavar="CAMPAIGN",
                   help="only this campaign: its key (funnel campaigns list) or a raw "
                        "campaign_id")
    p.add_argument("--medium", action="append", metavar="MEDIUM",
                   help="only this medium: whatsapp, instagram, webchat, ... (repeatable)")


def add_parsers(subparsers: Any) -> None:
    """Register `send-mock`, `export` and `report` on the `funnel` parser's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    sm = subparsers.add_parser(
        "send-mock", help="send simulated provider webhooks to a running API",
        description="Simulated WhatsApp / Qontak / generic conversations, signed with the "
                    "stack's secrets, posted to a running API; prints accepted / rejected "
                    "and the latency.", formatter_class=raw)
    sm.add_argument("--url", default=None,
                    help="the API (default: FUNNEL_API_URL, else http://127.0.0.1:8000)")
    sm.add_argument("--count", type=int, default=600, help="webhooks to send (%(default)s)")
    sm.add_argument("--rate", type=float, default=0.0,
                    help="at most this many webhooks per second (default 0: no limit)")
    sm.add_argument("--concurrency", type=int, default=32,
                    help="requests in flight (%(default)s)")
    sm.add_argument("--sources", default=",".join(SOURCES),
                    help="comma-separated providers (default %(default)s)")
    sm.add_argument("--seed", type=int, default=None,
                    help="simulator seed (default: new conversations every run; the same seed "
                         "sends the same message ids again, which the API counts as "
                         "redeliveries)")
    sm.add_argument("--days", type=int, default=1,
                    help="spread the conversations over the last N days (%(default)s)")
    sm.add_argument("--no-progress", action="store_true", help="no progress bar")
    sm.set_defaults(func=cmd_send_mock)

    ex = subparsers.add_parser(
        "export", help="write the funnel report (CSV or Parquet) to a file or S3",
        description="The funnel report's rows (the columns of GET /funnel-report?format=csv) "
                    "to a file or s3://BUCKET/KEY (the stack's S3 settings).",
        formatter_class=raw)
    _filter_args(ex)
    ex.add_argument("--format", choices=("csv", "parquet"), default=None,
                    help="default: parquet for a .parquet/.pq output, else csv")
    ex.add_argument("--output", "-o", default=DEFAULT_OUTPUT,
                    help="a file path or s3://BUCKET/KEY (default ./%(default)s)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.add_argument("--exact-values", action="store_true",
                    help="CSV for programs: no leading apostrophe on cells starting with = + - "
                         "@ (by default they get one, so spreadsheets never run them as "
                         "formulas; CSV_SPREADSHEET_SAFE=false makes this the default)")
    ex.set_defaults(func=cmd_export)

    rp = subparsers.add_parser(
        "report", help="the funnel summary by channel (or per day) as a table",
        description="Leads, bookings, transactions, conversion, revenue and stage times "
                    "per channel (the summary of GET /funnel-report).", formatter_class=raw)
    _filter_args(rp)
    rp.add_argument("--daily", action="store_true", help="per lead date and channel")
    rp.add_argument("--json", action="store_true", help="JSON instead of a table")
    rp.set_defaults(func=cmd_report)
