"""Phone numbers to E.164 with the `phonenumbers` library (docs/ingest.md, Phones).

Two rules, never mixed:
- provider ids (WhatsApp `from`/`wa_id`, Qontak `room.account_uniq_id`) are international digits
  without `+`: parse `"+" + digits` with no default region, so a Singapore or Malaysian number is
  never silently turned into an Indonesian one;
- numbers typed by people are parsed with the default region `ID` (trunk `0` etc.).
Either way the result must be a valid number, else None.
"""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat

_NON_DIGITS = re.compile(r"\D+")
_MAX_INPUT = 64  # longer "phones" are not phones; never hand them to the parser
_CACHED = 65_536
"""Parsed numbers remembered (a customer writes many messages; the parser costs about 40 µs,
a third of a message's normalization)."""


def _format_valid(number: phonenumbers.PhoneNumber) -> str | None:
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def from_provider_id(value: str | int | None) -> str | None:
    """E.164 of an international provider id (`6281234567890`, `+62 812…`), else None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_INPUT:
        return None
    digits = _NON_DIGITS.sub("", text)
    if not 6 <= len(digits) <= 15:
        return None
    return _international(digits)


@lru_cache(maxsize=_CACHED)
def _international(digits: str) -> str | None:
    try:
        return _format_valid(phonenumbers.parse("+" + digits, None))
    except NumberParseException:
        return None


def from_free_text(value: str | None, region: str = "ID") -> str | None:
    """E.164 of a number typed by a person (`0812-3456-7890`, `+62 812 …`), else None."""
    if value is None:
        return None
    text = str(value).strip()
    if not text or len(text) > _MAX_INPUT:
        return None
    return _national(text, region)


@lru_cache(maxsize=_CACHED)
def _national(text: str, region: str) -> str | None:
    try:
        return _format_valid(phonenumbers.parse(text, region))
    except NumberParseException:
        return None


def from_crm_field(value: str | int | None) -> str | None:
    """A CRM's phone field of unknown style: `+…`/`00…` or bare international digits are provider
    ids; a leading trunk `0` means a national Indonesian number."""
    if value is None:
        return None
    text = str(value).strip()
    if text.startswith("0") and not text.startswith("00"):
        return from_free_text(text)
    if text.startswith("00"):
        return from_provider_id(text[2:])
    return from_provider_id(text)
