"""`funnel keywords ...`: the keyword list, its versions, and changes previewed before they
are published.

    funnel keywords show [--json]                  the current version and the source of truth
    funnel keywords sync [--source ...] [--csv PATH] [--force]
    funnel keywords preview [FILE] [--days 30] [--json]
    funnel keywords versions [--json]
    funnel keywords diff A [B] [--json]            B: the current version by default
    funnel keywords rollback VERSION [--force]

`preview` re-classifies the stored messages of the last --days days with FILE (a keyword CSV;
without FILE the configured sheet or CSV) in memory and reports what publishing it would change;
it writes nothing. With GSHEET_KEY set the sheet is the source of truth: `sync --csv` and
`rollback` are refused. A list that leaves a stage without active keywords needs --force.

Wired into `funnel_ingest/cli/__init__.py` by `keywords.add_parsers(sub)` in `build_parser()`.
Exit codes: 0 done, 1 failed (one line on stderr naming the bad rows, the failing source or
the reason of the refusal).
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


def _errors() -> tuple[type[Exception], ...]:
    """What a keyword command reports in one line (`_failed`) rather than as a traceback: the
    source unreadable, bad rows (KeywordSetError), a refusal (StageEmptiedError, both
    ValueErrors; SourceOfTruthError; UnknownVersionError), Postgres down."""
    import psycopg

    from funnel_ingest.store import keywords as keyword_store
    from funnel_ingest.store.sheets import KeywordSourceError

    return (KeywordSourceError, ValueError, keyword_store.SourceOfTruthError,
            keyword_store.UnknownVersionError, psycopg.Error)


def _failed(cmd: str, exc: Exception) -> int:
    """Say why `cmd` failed in one line on stderr; exit code 1."""
    import psycopg

    from funnel_ingest.engine.keywords import KeywordSetError
    from funnel_ingest.store.sheets import KeywordSourceError, SheetError

    keep = "; the previous version stays current"
    if isinstance(exc, psycopg.Error):
        return _store_error(cmd, exc)
    if isinstance(exc, SheetError):
        err(f"funnel keywords {cmd}: Google Sheet ({exc.reason}): {one_line(exc.detail)}{keep}")
    elif isinstance(exc, KeywordSourceError):
        err(f"funnel keywords {cmd}: {one_line(exc.detail)}{keep}")
    elif isinstance(exc, KeywordSetError) and cmd != "preview":
        err(f"funnel keywords {cmd}: {one_line(exc)}{keep}")
    else:
        err(f"funnel keywords {cmd}: {one_line(exc)}")
    return 1


def _report(result: Any) -> None:
    state = "now current" if result.changed else "unchanged (already current)"
    forced = " (forced: a stage was emptied)" if result.forced else ""
    print(f"keyword version {result.version}: {result.row_count} keywords from "
          f"{result.source}, {state}{forced}")
    for warning in result.warnings:
        err(f"warning: {warning}")


def cmd_sync(args: argparse.Namespace) -> int:
    from funnel_ingest.store import keywords as keyword_store

    source = args.source
    if args.csv and source == "sheet":
        err("funnel keywords sync: --csv cannot be used with --source sheet")
        return 1
    try:
        result = keyword_store.sync(load_settings(), source=source, csv_path=args.csv,
                                    force=args.force)
    except _errors() as exc:
        return _failed("sync", exc)
    _report(result)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from funnel_ingest.store import keywords as keyword_store

    try:
        result = keyword_store.rollback(load_settings(), args.version, by="cli",
                                        force=args.force)
    except _errors() as exc:
        return _failed("rollback", exc)
    _report(result)
    return 0


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _connect():
    import psycopg

    return psycopg.connect(load_settings().database_url, connect_timeout=5, autocommit=True)


def cmd_show(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.store import keywords as keyword_store

    truth = keyword_store.source_of_truth(load_settings())
    try:
        with _connect() as conn:
            kset = keyword_store.current_version(conn)
            last = keyword_store.last_publication(conn)
    except psycopg.Error as exc:
        return _store_error("show", exc)
    if kset is None:
        err("funnel keywords show: no keyword version published yet; run `funnel keywords sync`")
        return 1
    published = last if last is not None and last.version == kset.version else None
    if args.json:
        doc: dict[str, Any] = {"version": kset.version, "source": kset.source,
                               "created_at": kset.created_at.isoformat(),
                               "row_count": len(kset.keywords), "warnings": list(kset.warnings),
                               "keywords": kset.items(), "source_of_truth": truth.as_dict(),
                               "published": _publication(published)}
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return 0
    print(f"version  {kset.version}")
    print(f"source   {kset.source}")
    print(f"created  {kset.created_at.isoformat(timespec='seconds')}")
    if published is not None:
        print(f"current  since {published.published_at.isoformat(timespec='seconds')} "
              f"({published.action} from {published.source}"
              f"{', forced' if published.forced else ''})")
    print(f"truth    {truth.detail}")
    print(f"keywords {len(kset.keywords)} "
          f"({sum(1 for k in kset.keywords if k.active)} active)")
    print()
    rows = [[k.stage, k.keyword, k.channel or "-", "yes" if k.active else "no"]
            for k in kset.keywords]
    print(_table(rows, ["stage", "keyword", "channel", "active"]))
    return 0


def _publication(p: Any) -> dict[str, Any] | None:
    return None if p is None else {
        "version": p.version, "previous": p.previous, "action": p.action, "source": p.source,
        "forced": p.forced, "published_at": p.published_at.isoformat()}


def cmd_versions(args: argparse.Namespace) -> int:
    import psycopg

    from funnel_ingest.store import keywords as keyword_store

    try:
        with _connect() as conn:
            versions = keyword_store.list_versions(conn, args.limit)
    except psycopg.Error as exc:
        return _store_error("versions", exc)
    if args.json:
        print(json.dumps([{
            "version": v.version, "source": v.source, "created_at": v.created_at.isoformat(),
            "activated_at": v.activated_at.isoformat(), "row_count": v.row_count,
            "current": v.current, "active": v.active, "last_publication": _publication(v.last)}
            for v in versions], ensure_ascii=False, indent=2))
        return 0
    if not versions:
        err("funnel keywords versions: no keyword version published yet")
        return 1
    rows = [["*" if v.current else "", v.version,
             v.activated_at.isoformat(timespec="seconds"),
             f"{v.last.action}{' (forced)' if v.last.forced else ''}" if v.last else "-",
             "/".join(str(n) for n in v.active.values()), v.source] for v in versions]
    print(_table(rows, ["", "version", "last current", "how", "active o/b/t", "source"]))
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from funnel_ingest.engine.keywords import diff, emptied_stages
    from funnel_ingest.store import keywords as keyword_store

    try:
        with _connect() as conn:
            a = keyword_store.resolve(conn, args.a)
            b = keyword_store.resolve(conn, args.b)
    except _errors() as exc:
        return _failed("diff", exc)
    d = diff(a.keywords, b.keywords)
    emptied = emptied_stages(a.keywords, b.keywords)
    if args.json:
        print(json.dumps({"from": a.version, "to": b.version, "added": len(d.added),
                          "removed": len(d.removed), "changed": len(d.changed),
                          "emptied_stages": emptied, "stages": d.by_stage()},
                         ensure_ascii=False, indent=2))
        return 0
    print(f"{a.version} -> {b.version}: {len(d.added)} added, {len(d.removed)} removed, "
          f"{len(d.changed)} changed")
    for stage, parts in d.by_stage().items():
        for item in parts["added"]:
            print(f"+ {stage:<11} {_shown(item)}")
        for item in parts["removed"]:
            print(f"- {stage:<11} {_shown(item)}")
        for change in parts["changed"]:
            print(f"~ {stage:<11} {_shown(change['before'])} -> {_shown(change['after'])}")
    if emptied:
        print(f"{b.version} has no active {' or '.join(emptied)} keyword "
              "(publishing it over the other needs --force)")
    return 0


def _shown(item: dict[str, Any]) -> str:
    extra = [f"channel {item['channel']}"] if item["channel"] else []
    if not item["active"]:
        extra.append("inactive")
    return json.dumps(item["keyword"], ensure_ascii=False) + (
        f" ({', '.join(extra)})" if extra else "")


def cmd_preview(args: argparse.Namespace) -> int:
    from funnel_ingest.store import impact as impact_store
    from funnel_ingest.store import keywords as keyword_store

    settings = load_settings()
    try:
        if args.file:
            candidate = keyword_store.read_source(settings, source="csv", csv_path=args.file)
        else:
            candidate = keyword_store.read_source(settings)
        impact = impact_store.preview_with(settings, candidate, days=args.days)
    except _errors() as exc:
        return _failed("preview", exc)
    doc = {**impact.as_dict(), "candidate_source": candidate.source,
           "warnings": list(candidate.warnings)}
    if args.json:
        print(json.dumps(doc, ensure_ascii=False, indent=2))
    else:
        print(render_impact(doc))
    return 0


def _signed(n: int) -> str:
    return f"{n:+,}" if n else "0"


def render_impact(doc: dict[str, Any]) -> str:
    """The preview as text: window and versions, messages per stage, leads per channel,
    examples, and whether publishing needs --force."""
    w = doc["window"]
    lines = [
        f"candidate {doc['candidate_version']} ({doc.get('candidate_source', 'candidate')}) "
        f"against the current version {doc['current_version'] or '(none)'}",
        f"window {w['start']} .. {w['end']} ({w['days']} days): {doc['messages']:,} messages, "
        f"{doc['changed_messages']:,} would be classified differently; "
        f"{doc['customers_recomputed']:,} customers recomputed, {doc['leads_changed']:,} leads "
        f"change; {doc['seconds']:.2f} s", ""]
    lines.append(_table([[s["stage"], f"{s['before']:,}", f"{s['after']:,}",
                          _signed(s["change"])] for s in doc["stages"]],
                        ["messages with", "now", "candidate", "change"]))
    lines.append("")
    rows = []
    for ch in [*doc["channels"], doc["total"]]:
        b, a, c = ch["before"], ch["after"], ch["change"]
        rows.append([ch["channel"], *(f"{b[k]:,} -> {a[k]:,} ({_signed(c[k])})"
                                      for k in ("leads", "bookings", "transactions", "value"))])
    lines.append("leads opened in the window (stored funnel -> with the candidate):")
    lines.append(_table(rows, ["channel", "leads", "bookings", "transactions", "value (Rp)"]))
    if doc["examples"]:
        lines += ["", "examples:"]
        for e in doc["examples"]:
            before = ", ".join(e["stages_before"]) or "(none)"
            after = ", ".join(e["stages_after"]) or "(none)"
            channel = (f"; channel {e['channel_before'] or '-'} -> {e['channel_after'] or '-'}"
                       if e["channel_before"] != e["channel_after"] else "")
            lines.append(f"  {json.dumps(e['excerpt'], ensure_ascii=False)} ({e['direction']}, "
                         f"{e['messages']:,} message{'s' if e['messages'] != 1 else ''}): "
                         f"{before} -> {after}{channel}")
    if doc["stale_messages"]:
        lines.append(f"\nnote: {doc['stale_messages']:,} messages of the window were classified "
                     "by another version than the current one (a backfill re-classifies them)")
    for warning in doc.get("warnings", []):
        lines.append(f"warning: {warning}")
    if doc["needs_force"]:
        lines.append(f"\npublishing it needs --force / force=true: no active "
                     f"{' or '.join(doc['emptied_stages'])} keyword would remain")
    return "\n".join(lines)


def add_parsers(subparsers: Any) -> argparse.ArgumentParser:
    """Register the `keywords` commands on the `funnel` parser's subparsers."""
    kw = subparsers.add_parser("keywords", help="show, sync, preview, diff or roll back the "
                                                "keyword list",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = kw.add_subparsers(dest="keywords_command", required=True)
    force_help = "publish even if a stage that has active keywords now would have none"
    sync = sub.add_parser("sync", help="pull the keywords from the Google Sheet or the CSV, "
                                       "validate and publish them")
    sync.add_argument("--source", choices=("auto", "sheet", "csv"), default="auto",
                      help="auto (default): the sheet when GSHEET_KEY is set, else the CSV")
    sync.add_argument("--csv", metavar="PATH", default=None,
                      help="read this CSV (default: KEYWORDS_CSV, else the packaged list)")
    sync.add_argument("--force", action="store_true", help=force_help)
    sync.set_defaults(func=cmd_sync)
    show = sub.add_parser("show", help="print the current keyword version")
    show.add_argument("--json", action="store_true", help="JSON instead of a table")
    show.set_defaults(func=cmd_show)
    preview = sub.add_parser("preview", help="what publishing a keyword CSV would change in "
                                             "the funnel (a dry run: nothing is written)")
    preview.add_argument("file", nargs="?", default=None, metavar="FILE",
                         help="a keyword CSV (default: the configured sheet or CSV)")
    preview.add_argument("--days", type=int, default=30,
                         help="the window: business days up to today (default 30)")
    preview.add_argument("--json", action="store_true", help="JSON instead of tables")
    preview.set_defaults(func=cmd_preview)
    versions = sub.add_parser("versions", help="list the stored versions")
    versions.add_argument("--limit", type=int, default=100)
    versions.add_argument("--json", action="store_true", help="JSON instead of a table")
    versions.set_defaults(func=cmd_versions)
    dif = sub.add_parser("diff", help="keywords added, removed and changed from A to B")
    dif.add_argument("a", metavar="A", help="a version")
    dif.add_argument("b", metavar="B", nargs="?", default=None,
                     help="another version (default: the current one)")
    dif.add_argument("--json", action="store_true", help="JSON instead of lines")
    dif.set_defaults(func=cmd_diff)
    rollback = sub.add_parser("rollback", help="make a stored version current again")
    rollback.add_argument("version", metavar="VERSION")
    rollback.add_argument("--force", action="store_true", help=force_help)
    rollback.set_defaults(func=cmd_rollback)
    return kw
