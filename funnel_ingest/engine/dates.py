"""The date a customer asks for, from Indonesian chat text (docs/funnel.md).

`requested_date(text, sent_at, tz)` reads dates relative to the message's local date in `tz`
(a naive `sent_at` is taken as UTC, the way timestamps are stored). It returns one date or
None; the booking date of the funnel is never this date, it may only be kept beside it.

Expressions, by priority (an explicit date beats a weekday beats a relative word; within one
kind the first in the text wins, and "hari ini" loses to any other relative word, because
"hari ini" is as often the time of speaking as the date asked for):

1. explicit dates
   - `01/10/2025`, `1-10-2025`, `1.10.2025`, `1/10/25` (day first, Indonesian order),
     `2025-10-01` (ISO);
   - `01/10` (day/month) without a year: the next such date on or after today ("24/7" and a
     fraction before a unit word, "1/2 porsi", are not dates); `tgl 1.10` with a dot only after
     tgl/tanggal, because `19.00` is a time; `d-m` without a year is a range, not a date;
   - `12 Des`, `12 Desember`, `12 Desember 2025`, `12-dec-2025`, `Dec 12`, ranges
     `5-7 Desember` (the first day), with Indonesian and English month names and abbreviations
     (`MONTHS`); without a year the next such date on or after today;
   - `tgl 5`/`tanggal 5`: day 5 of this month, or of the next month when the 5th has passed
     (`tgl 5 bulan depan`, `bulan depan tgl 5`: of next month); a day the month lacks moves
     to the next month that has it; `tgl 5-7` is a range: the 5th.
2. weekdays: senin, selasa, rabu, kamis, jumat/jum'at, sabtu, minggu/ahad (and English names).
   A bare weekday, "X ini" or "X besok" is the next such day on or after today (so "sabtu ini"
   on a Saturday is today); "X depan" is that day in the next calendar week (weeks start on
   Monday: "senin depan" is the Monday of next week); "X lalu"/"X kemarin" is past and
   ignored, and a message with "tiap/setiap X" is a schedule: its weekdays are ignored.
   "minggu" is Sunday only where it cannot mean "week": not after a number ("2 minggu") and not
   before depan/ini/lalu unless "hari" comes first ("hari minggu depan"). "malam X" is the eve
   of X ("malam minggu" is Saturday evening). "weekend"/"akhir pekan" is the coming Saturday
   (today on a Sunday); "weekend depan" the Saturday of next week.
3. relative words: besok/bsk/esok (+1), lusa (+2), "besok lusa" (+2), tulat (+3), "3 hari lagi"
   (+3), and for today hari ini, malam ini, nanti sore/malam, sekarang.
   "minggu depan" (next week) and "bulan depan" (next month) are not dates: None.

Impossible dates (31/02) are skipped. Money (`1.500.000`) and times (`19.00`, `jam 10.10`) are
never read as dates.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from funnel_ingest.engine.text import normalize_light

__all__ = ["MONTHS", "WEEKDAYS", "local_date", "requested_date"]

MONTHS: dict[str, int] = {
    "januari": 1, "january": 1, "jan": 1,
    "februari": 2, "pebruari": 2, "february": 2, "feb": 2, "peb": 2,
    "maret": 3, "march": 3, "mar": 3, "mrt": 3,
    "april": 4, "apr": 4,
    "mei": 5, "may": 5,
    "juni": 6, "june": 6, "jun": 6,
    "juli": 7, "july": 7, "jul": 7,
    "agustus": 8, "august": 8, "agus": 8, "agu": 8, "agt": 8, "ags": 8, "aug": 8,
    "september": 9, "sept": 9, "sep": 9,
    "oktober": 10, "october": 10, "okt": 10, "oct": 10,
    "november": 11, "nopember": 11, "nov": 11, "nop": 11,
    "desember": 12, "december": 12, "des": 12, "dec": 12,
}
WEEKDAYS: dict[str, int] = {
    "senin": 0, "selasa": 1, "rabu": 2, "kamis": 3, "jumat": 4, "jumaat": 4, "sabtu": 5,
    "minggu": 6, "ahad": 6,
    "monday": 0, "tuesday": 1, "wednesday": 2, "thursday": 3, "friday": 4, "saturday": 5,
    "sunday": 6,
}
_UNIT_AFTER = ("porsi", "kg", "orang", "org", "pax", "hari", "jam", "bagian", "gelas", "pcs",
               "lusin", "kamar", "malam", "liter", "cup")

_M = "|".join(sorted(MONTHS, key=len, reverse=True))
_W = "|".join(sorted(WEEKDAYS, key=len, reverse=True))
_DATE_CUE = r"(?:tgl|tanggal|tg|date)\.?\s*"
_RANGE = r"(?:\s*(?:-|–|s/?d|sampai|hingga|sampe)\s*\d{1,2})"
_NOT_MORE = r"(?!\d|[.,/-]\d)"

_ISO = re.compile(r"(?<![\d.,/-])(\d{4})-(\d{1,2})-(\d{1,2})(?!\d)")
_DMY = re.compile(rf"(?<![\d.,/-])(\d{{1,2}})([/.-])(\d{{1,2}})\2(\d{{4}}|\d{{2}}){_NOT_MORE}")
_DM_SLASH = re.compile(rf"(?<![\d.,/-])(\d{{1,2}})/(\d{{1,2}}){_NOT_MORE}")
_DM_DOT_AFTER_CUE = re.compile(rf"\b{_DATE_CUE}(\d{{1,2}})\.(\d{{1,2}}){_NOT_MORE}")
_DAY_MONTH = re.compile(
    rf"(?<![\d.,])(\d{{1,2}}){_RANGE}?\s*[-/ ]?\s*({_M})(?![a-z])\.?"
    rf"(?:[\s,-]*(\d{{4}}|'\d{{2}})(?!\d))?")
_MONTH_DAY = re.compile(rf"\b({_M})(?![a-z])\.?\s+(\d{{1,2}})(?!\d|[.,/:]\d|\s*(?:{_M})\b)"
                        rf"(?:\s*,?\s*(\d{{4}})(?!\d))?")
_DAY_OF_MONTH = re.compile(
    rf"(\b(?:bulan|bln)\s*depan\s*,?\s*)?\b{_DATE_CUE}(\d{{1,2}}){_RANGE}?"
    rf"(?!\d|[.,/]\d|\s*(?:{_M})(?![a-z]))(\s*(?:bulan|bln)\s*depan)?")
# `(?<!\d)`: a count starts where its digits start; without it a long digit run is tried from
# every digit, which is quadratic (100 000 digits took minutes).
_WEEKDAY = re.compile(rf"(?:(?<!\d)(\d+)\s*|\b(hari|hr|malam|mlm)\s+)?\b({_W})\b"
                      rf"(?:\s+(depan|ini|besok|nanti|lalu|kemarin|kemaren|kmrn|kmarin))?")
_RECURRING = re.compile(rf"\b(?:tiap|setiap|saban)\s+(?:hari\s+)?(?:{_W})\b")
_WEEKEND = re.compile(r"\b(?:weekend|wiken|akhir pekan|akhir minggu)\b(?:\s+(depan|lalu|kemarin))?")
_RELATIVE = re.compile(
    r"\b(?:(besok|bsk|besuk|esok)(\s+lusa)?|(lusa)|(tulat)|(\d{1,2})\s*(?:hari|hr)\s*lagi"
    r"|(hari ini|hr ini|malam ini|mlm ini|sore ini|siang ini|pagi ini|(?:nanti|ntar|entar)"
    r" (?:malam|mlm|sore|siang|pagi)|sekarang|skrg|skrng|today|tonight|tomorrow))\b")
_APOSTROPHE = re.compile(r"(?<=[a-z])['`\u2019](?=[a-z])")

Candidate = tuple[int, int, date]   # (priority, position, date)


def local_date(sent_at: datetime, tz: ZoneInfo) -> date:
    """The business date of `sent_at` in `tz` (a naive `sent_at` is UTC)."""
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=UTC)
    return sent_at.astimezone(tz).date()


def requested_date(text: str, sent_at: datetime, tz: ZoneInfo) -> date | None:
    """The date the customer asks for in `text`, or None (see the module docstring)."""
    return requested_on(text, local_date(sent_at, tz))


def requested_on(text: str, today: date) -> date | None:
    """`requested_date` of a text sent on the business date `today`."""
    s = _APOSTROPHE.sub("", normalize_light(text))
    if not s:
        return None
    candidates = [c for finder in _FINDERS for c in finder(s, today)]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c[0], c[1]))[2]


# --- helpers -----------------------------------------------------------------------------------

def _date(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _year(text: str | None, default: int) -> int:
    if not text:
        return default
    text = text.lstrip("'")
    return 2000 + int(text) if len(text) == 2 else int(text)


def _next_day_month(day: int, month: int, today: date) -> date | None:
    """The next `day`/`month` on or after `today` (this year or a later one)."""
    for year in range(today.year, today.year + 5):
        d = _date(year, month, day)
        if d is not None and d >= today:
            return d
    return None                                   # 31/02 and the like


def _day_of_month(day: int, today: date, months_ahead: int = 0) -> date | None:
    """`tgl <day>`: in this month when not yet past, else the next month that has that day."""
    if not 1 <= day <= 31:
        return None
    year, month = today.year, today.month
    for step in range(months_ahead, months_ahead + 13):
        y, m = year + (month - 1 + step) // 12, (month - 1 + step) % 12 + 1
        if day <= calendar.monthrange(y, m)[1]:
            d = date(y, m, day)
            if d >= today or months_ahead:
                return d
    return None


# --- finders: each yields (priority, position, date) -------------------------------------------

def _explicit(s: str, today: date) -> Iterator[Candidate]:
    for m in _ISO.finditer(s):
        d = _date(int(m[1]), int(m[2]), int(m[3]))
        if d:
            yield 0, m.start(), d
    for m in _DMY.finditer(s):
        d = _date(_year(m[4], today.year), int(m[3]), int(m[1]))
        if d:
            yield 0, m.start(), d
    for m in _DM_SLASH.finditer(s):
        if m.group() == "24/7" or _unit_follows(s, m.end()):
            continue
        d = _next_day_month(int(m[1]), int(m[2]), today)
        if d:
            yield 0, m.start(), d
    for m in _DM_DOT_AFTER_CUE.finditer(s):
        d = _next_day_month(int(m[1]), int(m[2]), today)
        if d:
            yield 0, m.start(), d
    for m in _DAY_MONTH.finditer(s):
        day, month = int(m[1]), MONTHS[m[2]]
        d = (_date(_year(m[3], today.year), month, day) if m[3]
             else _next_day_month(day, month, today))
        if d:
            yield 0, m.start(), d
    for m in _MONTH_DAY.finditer(s):
        day, month = int(m[2]), MONTHS[m[1]]
        d = (_date(int(m[3]), month, day) if m[3] else _next_day_month(day, month, today))
        if d:
            yield 0, m.start(), d
    for m in _DAY_OF_MONTH.finditer(s):
        d = _day_of_month(int(m[2]), today, 1 if (m[1] or m[3]) else 0)
        if d:
            yield 0, m.start(), d


def _unit_follows(s: str, end: int) -> bool:
    """Is the number ending at `end` a quantity ("1/2 porsi")?"""
    rest = s[end:end + 12].lstrip()
    return rest.startswith(_UNIT_AFTER)


def _weekdays(s: str, today: date) -> Iterator[Candidate]:
    if _RECURRING.search(s):
        return                                         # "tiap senin dan kamis": a schedule
    for m in _WEEKDAY.finditer(s):
        number, hari, name, when = m[1], m[2], m[3], m[4]
        if number:
            continue                                   # "2 minggu", "3 senin"?: a count
        if name == "minggu" and hari not in ("hari", "hr") and when in (
                "depan", "ini", "lalu", "kemarin", "kemaren", "kmrn", "kmarin"):
            continue                                   # minggu depan = next week
        if when in ("lalu", "kemarin", "kemaren", "kmrn", "kmarin"):
            continue                                   # in the past
        d = _weekday_date(WEEKDAYS[name], when == "depan", today)
        if hari in ("malam", "mlm"):
            d -= timedelta(days=1)                     # malam minggu: Saturday evening
            if d < today:
                d += timedelta(days=7)
        yield 1, m.start(), d
    for m in _WEEKEND.finditer(s):
        if m[1] in ("lalu", "kemarin"):
            continue
        if today.weekday() == 6 and not m[1]:
            yield 1, m.start(), today                  # on a Sunday the weekend is today
        else:
            yield 1, m.start(), _weekday_date(5, m[1] == "depan", today)


def _weekday_date(weekday: int, next_week: bool, today: date) -> date:
    """The next `weekday` on or after today, or that weekday in next calendar week."""
    if next_week:
        monday_next = today + timedelta(days=7 - today.weekday())
        return monday_next + timedelta(days=weekday)
    return today + timedelta(days=(weekday - today.weekday()) % 7)


def _relative(s: str, today: date) -> Iterator[Candidate]:
    for m in _RELATIVE.finditer(s):
        if m[1]:
            days, priority = (2 if m[2] else 1), 2
        elif m[3]:
            days, priority = 2, 2
        elif m[4]:
            days, priority = 3, 2
        elif m[5]:
            days, priority = int(m[5]), 2
        elif m[6] == "tomorrow":
            days, priority = 1, 2
        else:
            days, priority = 0, 3                     # today: the weakest reading
        yield priority, m.start(), today + timedelta(days=days)


_FINDERS: tuple[Callable[[str, date], Iterator[Candidate]], ...] = (
    _explicit, _weekdays, _relative)
