"""Campaign imports: a CRM's broadcast log read as entries (ref -> campaign name, sent count).

Pure functions, no I/O. The registry (store/campaigns.py) maps the ids leads carry to named
campaigns; payloads teach it what they carry (docs/funnel.md, Campaigns), an import tells it
what only the CRM knows: which campaign a message, a template, a broadcast or an ad belongs
to, and how many messages were sent.

An entry names the campaign of exactly one ref:

    message_id    an outbound message id (a `wamid.…`, a Qontak message id), or a campaign
                  label the generic format sends: what a lead's `campaign_id` holds
    template      a WhatsApp template name: every message sent as that template
    broadcast_id  a CRM broadcast id: every message of that broadcast
    ad_id         a Click-to-WhatsApp ad (its referral's `source_id`)
    campaign      the campaign's name, which is also its key in the registry
    sent          messages sent (an integer >= 0): default 1 for a message_id row (a broadcast
                  log has one row per message), unknown for the others

The JSON form (PUT /campaigns) is an array of such objects. The CSV form has a header row;
names are case- and space-insensitive and a few CRM spellings are understood (`wamid`,
`whatsapp_message_id`, `template_name`, `campaign_name`, `broadcast_name`, `sent_count`);
other columns are ignored with a warning. Every bad entry is reported at once (index: 0-based
array position; row: 1-based CSV row, header = 1). The same ref twice for the same campaign is
one entry (the first kept); for two campaigns it is an error.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

REF_FIELDS = {"message_id": "message", "template": "template", "broadcast_id": "broadcast",
              "ad_id": "ad"}
"""Entry field -> the registry's ref kind."""
FIELDS = (*REF_FIELDS, "campaign", "sent")
_ALIASES = {"wamid": "message_id", "whatsapp_message_id": "message_id", "msg_id": "message_id",
            "template_name": "template", "message_template": "template",
            "broadcast": "broadcast_id", "campaign_name": "campaign",
            "broadcast_name": "campaign", "sent_count": "sent"}
MAX_ENTRIES = 200_000
MAX_NAME = 200
MAX_REF = 512
_SPACE = re.compile(r"\s+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


@dataclass(frozen=True, slots=True)
class CampaignEntry:
    kind: str            # message | template | broadcast | ad
    ref: str
    campaign: str        # the name, and the campaign's key
    sent: int | None = None


@dataclass(frozen=True, slots=True)
class EntryError:
    """One bad entry: `label` "index" (0-based, JSON) or "row" (1-based, CSV; header = 1)."""

    position: int
    message: str
    label: str = "index"

    def __str__(self) -> str:
        return f"{self.label} {self.position}: {self.message}"


class CampaignImportError(ValueError):
    """The import is not usable; `.errors` names every bad entry (nothing is imported)."""

    def __init__(self, errors: Sequence[EntryError]) -> None:
        self.errors = list(errors)
        n = len(self.errors)
        shown = "; ".join(str(e) for e in self.errors[:20])
        more = f"; and {n - 20} more" if n > 20 else ""
        head = f"{n} bad campaign entries: " if n > 1 else ""
        super().__init__(head + shown + more)


def campaign_name(value: str) -> str:
    """A campaign name as stored (and its key): NFKC, whitespace collapsed, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value)).strip()


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{what} must be a string")
    return str(value).strip()


def _entry(fields: Mapping[str, Any]) -> CampaignEntry:
    """One entry from its fields (already under their canonical names); ValueError says why."""
    refs = [(f, _text(fields[f], f)) for f in REF_FIELDS if fields.get(f) not in (None, "")]
    refs = [(f, v) for f, v in refs if v]
    if len(refs) != 1:
        named = ", ".join(REF_FIELDS)
        raise ValueError(f"give exactly one of {named}" if not refs else
                         f"give exactly one of {named}, not {' and '.join(f for f, _ in refs)}")
    (field, ref), = refs
    if len(ref) > MAX_REF or _CONTROL.search(ref):
        raise ValueError(f"{field} must be at most {MAX_REF} characters without control "
                         "characters")
    raw = fields.get("campaign")
    if raw in (None, ""):
        raise ValueError("campaign (the campaign's name) is missing")
    name = campaign_name(_text(raw, "campaign"))
    if not name or len(name) > MAX_NAME or _CONTROL.search(name):
        raise ValueError(f"campaign must be 1 to {MAX_NAME} characters without control "
                         "characters")
    return CampaignEntry(REF_FIELDS[field], ref, name, _sent(fields.get("sent"), field))


def _sent(value: Any, field: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return 1 if field == "message_id" else None
    if isinstance(value, bool):
        raise ValueError("sent must be a whole number >= 0")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise ValueError(f"sent must be a whole number >= 0, not {value!r}")
    if not 0 <= number < 2**62:
        raise ValueError("sent must be a whole number >= 0")
    return number


def _collect(items: Iterable[tuple[int, Mapping[str, Any] | ValueError]], label: str
             ) -> list[CampaignEntry]:
    """The entries of (position, fields) pairs, duplicates collapsed; every problem at once."""
    entries: list[CampaignEntry] = []
    seen: dict[tuple[str, str], tuple[int, CampaignEntry]] = {}
    errors: list[EntryError] = []
    for position, fields in items:
        try:
            if isinstance(fields, ValueError):
                raise fields
            entry = _entry(fields)
        except ValueError as exc:
            errors.append(EntryError(position, str(exc), label))
            continue
        first = seen.get((entry.kind, entry.ref))
        if first is None:
            seen[(entry.kind, entry.ref)] = (position, entry)
            entries.append(entry)
        elif first[1].campaign != entry.campaign:
            errors.append(EntryError(position, (
                f"{entry.kind} {entry.ref!r} is given to campaign {entry.campaign!r} here and "
                f"to {first[1].campaign!r} at {label} {first[0]}"), label))
    if len(entries) + len(errors) > MAX_ENTRIES:
        raise CampaignImportError([EntryError(0, f"at most {MAX_ENTRIES:,} entries at once",
                                              "import")])
    if errors:
        raise CampaignImportError(errors)
    if not entries:
        raise CampaignImportError([EntryError(0, "no entries to import", "import")])
    return entries


def from_json_items(items: Any) -> list[CampaignEntry]:
    """The entries of PUT /campaigns' body: an array of objects with the fields above."""
    if not isinstance(items, list):
        raise CampaignImportError([EntryError(0, "the body must be a JSON array of entries",
                                              "body")])

    def fields() -> Iterable[tuple[int, Mapping[str, Any] | ValueError]]:
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                yield i, ValueError("an entry must be an object")
                continue
            unknown = sorted(set(item) - set(FIELDS))
            yield i, (ValueError(f"unknown field {unknown[0]!r} (expected "
                                 f"{', '.join(FIELDS)})") if unknown else item)

    return _collect(fields(), "index")


def _header(value: str) -> str:
    name = _SPACE.sub("_", value.strip().casefold().replace("-", "_"))
    return _ALIASES.get(name, name)


def from_csv_text(text: str, warnings: list[str] | None = None) -> list[CampaignEntry]:
    """The entries of a CSV broadcast log (header row first). Columns the import does not know
    are reported in `warnings` and ignored."""
    rows = csv.reader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    header = next(rows, None)
    if not header or not any(h.strip() for h in header):
        raise CampaignImportError([EntryError(1, "the CSV has no header row", "row")])
    names = [_header(h) for h in header]
    known = [n for n in names if n in FIELDS]
    if "campaign" not in known or not set(known) & set(REF_FIELDS):
        raise CampaignImportError([EntryError(1, (
            "the header needs a campaign column and one of "
            f"{', '.join(REF_FIELDS)} (found: {', '.join(h.strip() for h in header)})"), "row")])
    duplicated = sorted({n for n in known if known.count(n) > 1})
    if duplicated:
        raise CampaignImportError([EntryError(1, f"column {duplicated[0]!r} is given twice",
                                              "row")])
    ignored = [h.strip() for h, n in zip(header, names) if n not in FIELDS and h.strip()]
    if ignored and warnings is not None:
        warnings.append(f"columns ignored: {', '.join(ignored)}")
    columns = [(i, n) for i, n in enumerate(names) if n in FIELDS]

    def fields() -> Iterable[tuple[int, Mapping[str, Any] | ValueError]]:
        for number, row in enumerate(rows, start=2):
            if not any(cell.strip() for cell in row):
                continue  # blank lines (a trailing one, a spacer) are not entries
            yield number, {n: row[i] if i < len(row) else None for i, n in columns}

    try:
        return _collect(fields(), "row")
    except csv.Error as exc:
        raise CampaignImportError([EntryError(0, f"not a readable CSV: {exc}", "row")]) from None
