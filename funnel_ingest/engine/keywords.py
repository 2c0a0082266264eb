"""Keyword lists: parsing the sheet / CSV layouts and the API's JSON, validation, versions.

Pure functions, no I/O except `load_csv`. Two table layouts are read (docs/funnel.md):

(a) the keyword table, header `stage, keyword, channel, active` (`channel` and `active` optional;
    header names are case- and space-insensitive, extra columns are ignored with a warning)::

        stage,keyword,channel,active
        opening,"Halo, saya lihat iklan di Facebook",ads,TRUE
        booking,reservasi,,TRUE

(b) the original layout: columns `opening`, `booking`, `transaction`, one keyword per cell, any
    number of rows, empty cells skipped::

        opening,booking,transaction
        halo,booking,sudah transfer
        hai,reservasi,

Row numbers in errors and warnings are the sheet's / CSV's: 1-based, the header is row 1. Every
bad row is reported at once in one `KeywordSetError`; nothing is silently dropped. Duplicates
(same stage and normalized keyword) are collapsed, the first one kept, with a warning.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from funnel_ingest.engine.model import STAGES, Keyword, Stage

_TRUE = frozenset({"true", "yes", "y", "1", "ya", "on", ""})
_FALSE = frozenset({"false", "no", "n", "0", "tidak", "off"})
_SPACE = re.compile(r"\s+")
_TABLE_COLUMNS = ("stage", "keyword", "channel", "active")
_JSON_FIELDS = frozenset({"stage", "keyword", "channel", "active"})


@dataclass(frozen=True, slots=True)
class KeywordRowError:
    """One bad row (`label` "row": 1-based sheet/CSV row, header = 1) or item (`label` "index":
    0-based position in the API's JSON array)."""

    row: int
    message: str
    label: str = "row"

    def __str__(self) -> str:
        return f"{self.label} {self.row}: {self.message}"


class KeywordSetError(ValueError):
    """The keyword list is not usable; `.errors` names every bad row."""

    def __init__(self, errors: Sequence[KeywordRowError]) -> None:
        self.errors: list[KeywordRowError] = list(errors)
        n = len(self.errors)
        head = f"{n} bad keyword row{'s' if n != 1 else ''}: " if n > 1 else ""
        super().__init__(head + "; ".join(str(e) for e in self.errors))


class EmptyKeywordSetError(KeywordSetError):
    """The source holds no keyword at all (never published: it would switch matching off)."""

    def __init__(self, where: str = "the source") -> None:
        super().__init__([KeywordRowError(0, f"{where} holds no keywords", "set")])

    def __str__(self) -> str:
        return self.errors[0].message


def normalize_text(value: str) -> str:
    """A keyword as stored and shown: NFKC, whitespace collapsed and stripped (case kept), NUL
    removed (Postgres text cannot hold it: one would fail the whole publication)."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value).replace("\x00", "")).strip()


def keyword_key(value: str) -> str:
    """The identity of a keyword for duplicates: `normalize_text` + casefold."""
    return normalize_text(value).casefold()


def _header_name(value: Any) -> str:
    return _SPACE.sub("_", str(value).strip().casefold().replace("-", "_"))


def parse_active(value: Any) -> bool:
    """TRUE/FALSE, yes/no, y/n, 1/0, ya/tidak, on/off (any case); empty = active."""
    if value is None or isinstance(value, bool):
        return True if value is None else value
    text = str(value).strip().casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"active must be TRUE/FALSE, yes/no, 1/0 or ya/tidak, not {str(value)!r}")


def _stage(value: Any) -> Stage:
    text = str(value).strip().casefold()
    if text not in STAGES:
        shown = str(value).strip()
        raise ValueError(f"unknown stage {shown!r} (expected {', '.join(STAGES)})"
                         if shown else f"stage is empty (expected {', '.join(STAGES)})")
    return text  # type: ignore[return-value]


class _Collector:
    """Keeps keywords in input order, collapsing duplicates with a warning."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.keywords: list[Keyword] = []
        self.warnings: list[str] = []
        self._seen: dict[tuple[str, str], tuple[int, Keyword]] = {}

    def add(self, where: int, kw: Keyword) -> None:
        key = (kw.stage, keyword_key(kw.keyword))
        if key in self._seen:
            first_where, first = self._seen[key]
            differs = "" if (first.channel, first.active) == (kw.channel, kw.active) else (
                f" (its channel/active differ: {kw.channel or '-'}/{kw.active} vs "
                f"{first.channel or '-'}/{first.active})")
            self.warnings.append(
                f"{self.label} {where}: duplicate {kw.stage} keyword {kw.keyword!r} of "
                f"{self.label} {first_where} ignored{differs}")
            return
        self._seen[key] = (where, kw)
        self.keywords.append(kw)


def _cell(row: Sequence[Any], index: int | None) -> str:
    if index is None or index >= len(row) or row[index] is None:
        return ""
    return str(row[index])


def _blank(row: Sequence[Any]) -> bool:
    return all(not str(c).strip() for c in row if c is not None)


@dataclass(slots=True)
class Parsed:
    keywords: list[Keyword]
    warnings: list[str] = field(default_factory=list)


def parse(rows: Sequence[Sequence[Any]]) -> Parsed:
    """`parse_rows` with its warnings (duplicates, ignored columns, stages without keywords)."""
    rows = list(rows)
    start = next((i for i, row in enumerate(rows) if not _blank(row)), None)
    if start is None:
        return Parsed([], [])
    header_row = start + 1
    names = [_header_name(c) if c is not None else "" for c in rows[start]]
    errors: list[KeywordRowError] = []
    warnings: list[str] = []
    positions: dict[str, int] = {}
    for i, name in enumerate(names):
        if not name:
            continue
        if name in positions:
            errors.append(KeywordRowError(header_row, f"column {name!r} appears twice"))
        positions.setdefault(name, i)

    table = "stage" in positions or "keyword" in positions
    original = any(s in positions for s in STAGES)
    if table and original:
        errors.append(KeywordRowError(header_row, (
            "ambiguous header: use either `stage, keyword, channel, active` or "
            "`opening, booking, transaction`, not both")))
    elif table and not ("stage" in positions and "keyword" in positions):
        missing = "stage" if "stage" not in positions else "keyword"
        errors.append(KeywordRowError(header_row, f"the header has no {missing!r} column "
                                                  "(expected stage, keyword, channel, active)"))
    elif not table and not original:
        shown = ", ".join(str(c).strip() for c in rows[start] if str(c or "").strip())
        errors.append(KeywordRowError(header_row, (
            f"unknown header layout ({shown}): expected columns `stage, keyword, channel, "
            "active` or `opening, booking, transaction`")))
    if errors:
        raise KeywordSetError(errors)

    known = _TABLE_COLUMNS if table else STAGES
    extra = [n for n in positions if n not in known]
    if extra:
        warnings.append(f"row {header_row}: column(s) {', '.join(extra)} ignored")

    out = _Collector("row")
    body = rows[start + 1:]
    if table:
        col = {n: positions.get(n) for n in _TABLE_COLUMNS}
        for offset, row in enumerate(body):
            number = header_row + 1 + offset
            if _blank(row):
                continue
            problems: list[str] = []
            stage = keyword = None
            active = True
            try:
                stage = _stage(_cell(row, col["stage"]))
            except ValueError as exc:
                problems.append(str(exc))
            keyword = normalize_text(_cell(row, col["keyword"]))
            if not keyword:
                problems.append("keyword is empty")
            try:
                active = parse_active(_cell(row, col["active"]))
            except ValueError as exc:
                problems.append(str(exc))
            if problems:
                errors.append(KeywordRowError(number, "; ".join(problems)))
                continue
            channel = normalize_text(_cell(row, col["channel"])) or None
            out.add(number, Keyword(stage, keyword, channel, active))  # type: ignore[arg-type]
    else:
        for offset, row in enumerate(body):
            number = header_row + 1 + offset
            for stage in STAGES:
                keyword = normalize_text(_cell(row, positions.get(stage)))
                if keyword:
                    out.add(number, Keyword(stage, keyword))
    if errors:
        raise KeywordSetError(errors)
    return Parsed(out.keywords, warnings + out.warnings + _stage_warnings(out.keywords))


def _stage_warnings(keywords: Sequence[Keyword]) -> list[str]:
    if not keywords:
        return []
    active = {k.stage for k in keywords if k.active}
    return [f"no active {s} keywords" for s in STAGES if s not in active]


def parse_rows(rows: Sequence[Sequence[Any]], *, warnings: list[str] | None = None) -> list[Keyword]:
    """Keywords of a sheet / CSV table (either layout), in input order, duplicates collapsed.

    Raises `KeywordSetError` naming every bad row. Warnings are appended to `warnings` if given.
    An input without any keyword gives `[]` (callers that publish refuse it).
    """
    parsed = parse(rows)
    if warnings is not None:
        warnings.extend(parsed.warnings)
    return parsed.keywords


def from_json_items(items: Any, *, warnings: list[str] | None = None) -> list[Keyword]:
    """Keywords of the API's JSON: `[{"stage", "keyword", "channel"?, "active"?}, ...]`.

    Errors name the 0-based index of each bad item (`label` "index").
    """
    if not isinstance(items, list):
        raise KeywordSetError([KeywordRowError(0, "the body must be a JSON array of "
                                                  '{"stage", "keyword", "channel"?, "active"?}',
                                               "body")])
    errors: list[KeywordRowError] = []
    out = _Collector("index")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(KeywordRowError(index, "must be an object with stage and keyword",
                                          "index"))
            continue
        problems: list[str] = []
        unknown = sorted(set(item) - _JSON_FIELDS)
        if unknown:
            problems.append(f"unknown field(s) {', '.join(unknown)}")
        stage = None
        raw_stage = item.get("stage")
        if not isinstance(raw_stage, str):
            problems.append(f"stage must be one of {', '.join(STAGES)}")
        else:
            try:
                stage = _stage(raw_stage)
            except ValueError as exc:
                problems.append(str(exc))
        raw_kw = item.get("keyword")
        keyword = normalize_text(raw_kw) if isinstance(raw_kw, str) else ""
        if not isinstance(raw_kw, str):
            problems.append("keyword must be a string")
        elif not keyword:
            problems.append("keyword is empty")
        raw_channel = item.get("channel")
        if raw_channel is not None and not isinstance(raw_channel, str):
            problems.append("channel must be a string or null")
            raw_channel = None
        active = True
        raw_active = item.get("active")
        if isinstance(raw_active, int) and not isinstance(raw_active, bool):
            raw_active = str(raw_active)  # 1 / 0
        if raw_active is not None and not isinstance(raw_active, (bool, str)):
            problems.append("active must be a boolean")
        else:
            try:
                active = parse_active(raw_active)
            except ValueError as exc:
                problems.append(str(exc))
        if problems:
            errors.append(KeywordRowError(index, "; ".join(problems), "index"))
            continue
        channel = normalize_text(raw_channel) if raw_channel else None
        out.add(index, Keyword(stage, keyword, channel or None, active))  # type: ignore[arg-type]
    if errors:
        raise KeywordSetError(errors)
    if warnings is not None:
        warnings.extend(out.warnings + _stage_warnings(out.keywords))
    return out.keywords


def read_csv_rows(path: str | Path) -> list[list[str]]:
    """The cells of a CSV file (UTF-8, a BOM from spreadsheet exports is accepted)."""
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return [list(row) for row in csv.reader(fh)]


def load_csv(path: str | Path, *, warnings: list[str] | None = None) -> list[Keyword]:
    """Keywords of a CSV file in either layout (see `parse_rows`)."""
    return parse_rows(read_csv_rows(path), warnings=warnings)


def default_csv_path() -> Path:
    """The packaged default list, `funnel_ingest/data/keywords.csv`."""
    return Path(__file__).resolve().parent.parent / "data" / "keywords.csv"


def _sort_key(kw: Keyword) -> tuple[int, str, str]:
    return (STAGES.index(kw.stage), keyword_key(kw.keyword), kw.keyword)


def canonical(keywords: Iterable[Keyword]) -> tuple[Keyword, ...]:
    """Keywords in canonical order: stage (opening, booking, transaction), then keyword."""
    return tuple(sorted(keywords, key=_sort_key))


def compute_version(keywords: Iterable[Keyword]) -> str:
    """First 16 hex digits of SHA-256 over the canonical (sorted) content; order-independent."""
    content = [[k.stage, k.keyword, k.channel or "", bool(k.active)] for k in canonical(keywords)]
    blob = json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class KeywordSet:
    """One version of the keyword list. Build it with `KeywordSet.build`."""

    keywords: tuple[Keyword, ...]
    version: str
    source: str
    created_at: datetime
    warnings: tuple[str, ...] = ()

    @classmethod
    def build(cls, keywords: Iterable[Keyword], source: str, *,
              created_at: datetime | None = None, warnings: Iterable[str] = ()) -> KeywordSet:
        ordered = canonical(keywords)
        return cls(ordered, compute_version(ordered), source,
                   created_at or datetime.now(UTC), tuple(warnings))

    def __len__(self) -> int:
        return len(self.keywords)

    def active(self, stage: Stage) -> list[str]:
        """The active keywords of one stage (the members of Redis `keywords:<stage>`)."""
        return [k.keyword for k in self.keywords if k.stage == stage and k.active]

    def items(self) -> list[dict[str, Any]]:
        """The entries as the API's JSON items."""
        return [{"stage": k.stage, "keyword": k.keyword, "channel": k.channel,
                 "active": k.active} for k in self.keywords]


# --- comparing two lists ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KeywordChange:
    """One keyword in both lists (same stage, same `keyword_key`) whose spelling, channel or
    active flag differs."""

    before: Keyword
    after: Keyword


@dataclass(frozen=True, slots=True)
class KeywordDiff:
    """What turns list A into list B, entry by entry (a keyword is identified by its stage and
    `keyword_key`, so "Reservasi" -> "reservasi" is a change, not a removal and an addition)."""

    added: tuple[Keyword, ...] = ()
    removed: tuple[Keyword, ...] = ()
    changed: tuple[KeywordChange, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def by_stage(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """Per stage (every stage present): `added` and `removed` items, and `changed` as
        `{"keyword", "before": {...}, "after": {...}}` (the items of `KeywordSet.items`)."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {
            s: {"added": [], "removed": [], "changed": []} for s in STAGES}
        for kw in self.added:
            out[kw.stage]["added"].append(_item(kw))
        for kw in self.removed:
            out[kw.stage]["removed"].append(_item(kw))
        for ch in self.changed:
            out[ch.after.stage]["changed"].append(
                {"keyword": ch.after.keyword, "before": _item(ch.before),
                 "after": _item(ch.after)})
        return out


def _item(kw: Keyword) -> dict[str, Any]:
    return {"stage": kw.stage, "keyword": kw.keyword, "channel": kw.channel, "active": kw.active}


def diff(before: Iterable[Keyword], after: Iterable[Keyword]) -> KeywordDiff:
    """The entries added, removed and changed from `before` to `after`, in canonical order."""
    old = {(k.stage, keyword_key(k.keyword)): k for k in before}
    new = {(k.stage, keyword_key(k.keyword)): k for k in after}
    return KeywordDiff(
        added=canonical(k for key, k in new.items() if key not in old),
        removed=canonical(k for key, k in old.items() if key not in new),
        changed=tuple(sorted((KeywordChange(old[key], k) for key, k in new.items()
                              if key in old and old[key] != k),
                             key=lambda c: _sort_key(c.after))))


def emptied_stages(before: Iterable[Keyword], after: Iterable[Keyword]) -> list[Stage]:
    """The stages that have active keywords in `before` and none in `after`: publishing `after`
    would switch that stage's matching off (no more bookings, say), so it needs `force`."""
    had = {k.stage for k in before if k.active}
    has = {k.stage for k in after if k.active}
    return [s for s in STAGES if s in had and s not in has]
