"""`funnel conversions ...`: the Conversions API outbox from the terminal.

    funnel conversions status [--json]     counts per status and event, what is due, last errors
    funnel conversions send [--max-batches N]
                                           one delivery pass now (what the Dagster sensor runs)
    funnel conversions retry               failed events pending again, attempts from 0

Wired into `funnel_ingest/cli/__init__.py` by `conversions.add_parsers(sub)` in
`build_parser()`. Exit codes: 0 done; 1 not configured, Postgres unavailable, or Meta
unavailable (its events back off and are retried); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from funnel_ingest.cli._common import err, load_settings, one_line

if TYPE_CHECKING:  # psycopg is imported by the commands, not when the CLI starts
    import psycopg


def _store_error(cmd: str, exc: psycopg.Error) -> int:
    import psycopg

    if isinstance(exc, psycopg.errors.UndefinedTable):
        err(f"funnel conversions {cmd}: the outbox table does not exist; run `funnel migrate`")
    else:
        err(f"funnel conversions {cmd}: Postgres unavailable: {one_line(exc)}")
    return 1


def cmd_status(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.conversions import outbox
    from funnel_ingest.conversions.delivery import missing_settings

    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            counts = outbox.counts(conn, settings.conversion_event_names)
            errors = outbox.recent_errors(conn, limit=args.errors)
    except psycopg.Error as exc:
        return _store_error("status", exc)
    missing = missing_settings(settings)
    if args.json:
        print(json.dumps({"enabled": not missing, "missing_settings": missing,
                          "by_status": counts.by_status, "by_event": counts.by_event,
                          "due": counts.due, "in_flight": counts.in_flight,
                          "next_attempt_at": counts.next_attempt_at, "errors": errors},
                         default=str, indent=2))
        return 0
    print("Conversions API: " + ("on" if not missing else f"off (set {', '.join(missing)})"))
    print(", ".join(f"{status} {n}" for status, n in counts.by_status.items())
          + f"; due now {counts.due}, in flight {counts.in_flight}"
          + (f", next retry {counts.next_attempt_at:%Y-%m-%d %H:%M:%S %Z}"
             if counts.next_attempt_at else ""))
    for name, statuses in counts.by_event.items():
        print(f"  {name:14} " + ", ".join(f"{s} {n}" for s, n in statuses.items() if n))
    if errors:
        print("last errors:")
    for e in errors:
        print(f"  {e['event_id']} [{e['status']}, {e['attempts']} attempts]: {e['error']}")
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.conversions.delivery import NotConfigured, deliver

    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            report = deliver(conn, settings, max_batches=args.max_batches, log=err)
    except NotConfigured as exc:
        err(f"funnel conversions send: {exc}")
        return 1
    except psycopg.Error as exc:
        return _store_error("send", exc)
    print(f"sent {report.sent} events in {report.requests} requests; {report.retried} to "
          f"retry, {report.failed} failed, {report.expired} expired ({report.seconds:.1f} s)")
    if report.stopped:
        err(f"funnel conversions send: stopped: {report.stopped}; its events are retried later")
        return 1
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.conversions import outbox

    settings = load_settings()
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            n = outbox.requeue_failed(conn)
    except psycopg.Error as exc:
        return _store_error("retry", exc)
    print(f"{n} failed events pending again")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def add_parsers(sub: argparse._SubParsersAction) -> None:
    conv = sub.add_parser("conversions", help="the Meta Conversions API outbox: status, send, "
                          "retry")
    csub = conv.add_subparsers(dest="conversions_command", required=True)
    st = csub.add_parser("status", help="outbox counts, what is due, the last errors")
    st.add_argument("--json", action="store_true", help="as JSON")
    st.add_argument("--errors", type=_positive, default=5, help="last errors shown (default 5)")
    st.set_defaults(func=cmd_status)
    send = csub.add_parser("send", help="send the due events now (one delivery pass)")
    send.add_argument("--max-batches", type=_positive, default=None,
                      help="stop after this many batches (default: until nothing is due)")
    send.set_defaults(func=cmd_send)
    csub.add_parser("retry", help="failed events pending again (after fixing their cause)"
                    ).set_defaults(func=cmd_retry)
