"""Text normalization for Indonesian chat messages (docs/funnel.md, Matching).

Three levels, each a pure function of the text:

- `normalize_light(text)`: NFKC + casefold + whitespace collapsed; punctuation kept. The money
  and date parsers read this form, because `1.500.000`, `Rp.`, `12/12` and `19.00` live in the
  punctuation.
- `normalize(text)`: the light form with accents stripped, apostrophes inside words removed
  (`jum'at` -> `jumat`), letters and digits kept, a space between a letter and a digit
  (`dp500k` -> `dp 500 k`, `tf1jt` -> `tf 1 jt`), everything else one space. Tokens are
  `normalize(text).split(" ")`. Matcher hits carry offsets into this string.
- `skeleton(normalized)`: every run of the same letter collapsed to one letter (`bookinggg`,
  `booking`, `boooking` -> `boking`; `okeee` -> `oke`); digits are never collapsed. The matcher
  applies it to keywords and text alike so both meet; `skeleton_with_map` also gives the
  `SkeletonMap` of skeleton offsets back to normalized offsets.

`clause_tokens(text)` gives the skeleton tokens with a `CLAUSE_BREAK` token wherever the original
text had a clause boundary (`.`, `,`, `?`, `!`, `;`, `:`, a newline, but not the dot or comma
inside a number), for negation scope.
"""

from __future__ import annotations

import bisect
import re
import string
import unicodedata

import ahocorasick_rs

__all__ = [
    "CLAUSE_BREAK",
    "SkeletonMap",
    "clause_tokens",
    "normalize",
    "normalize_light",
    "skeleton",
    "skeleton_with_map",
    "strip_accents",
]

CLAUSE_BREAK = "\x01"
"""The token `clause_tokens` puts where a clause ends."""

_SPACES = re.compile(r"\s+")
# An apostrophe between letters is part of the word: jum'at, don't.
_APOSTROPHE = re.compile(r"(?<=[^\W\d_])['`\u2019\u02bc](?=[^\W\d_])")
_DIGIT_RUN = re.compile(r"(\d+)")
# Anything that is not a letter or a digit (underscore is a word char for `re`, not for us).
_NON_ALNUM = re.compile(r"[\W_]+")
_ASCII_NON_ALNUM = str.maketrans({chr(i): " " for i in range(128) if not chr(i).isalnum()})
# ASCII letters -> "a", digits -> "0": finds a letter touching a digit with two `in` tests.
_ASCII_CLASSES = str.maketrans({**{c: "a" for c in string.ascii_letters},
                                **{c: "0" for c in string.digits}})
_NON_ALNUM_KEEP_BREAK = re.compile(r"[^\w\x01]+|_+")
_ASCII_NON_ALNUM_KEEP_BREAK = str.maketrans(
    {chr(i): " " for i in range(128) if not chr(i).isalnum() and chr(i) != CLAUSE_BREAK})
_LETTER_RUN = re.compile(r"([^\W\d_])\1+")
_ASCII_DOUBLES = ahocorasick_rs.AhoCorasick([c + c for c in string.ascii_lowercase])
# Clause punctuation; `_clause_break` keeps a `.`/`,`/`:` between digits (1.500.000, 19:00).
_CLAUSE_PUNCT = re.compile(r"[.,:?!;\n\u2026]+")


def strip_accents(text: str) -> str:
    """Remove combining marks after canonical decomposition (`café` -> `cafe`)."""
    if text.isascii() or unicodedata.is_normalized("NFD", text):
        return text
    decomposed = unicodedata.normalize("NFD", text)
    return unicodedata.normalize(
        "NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def normalize_light(text: str) -> str:
    """NFKC + casefold + whitespace collapsed to single spaces, punctuation kept.

    `"  ＲＰ１.５００.０００,-\\n"` -> `"rp1.500.000,-"`.
    """
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def _folded(text: str) -> str:
    """NFKC, casefold, accents stripped, apostrophes inside words removed."""
    s = strip_accents(unicodedata.normalize("NFKC", text).casefold())
    if "'" in s or "`" in s or "\u2019" in s or "\u02bc" in s:
        s = _APOSTROPHE.sub("", s)
    return s


def _digits_apart(s: str) -> str:
    """Put spaces around digit runs so a letter never touches a digit (dp500k -> dp 500 k)."""
    if s.isascii():
        classes = s.translate(_ASCII_CLASSES)
        if "a0" not in classes and "0a" not in classes:
            return s                       # the common case: no letter touches a digit
    return " ".join(_DIGIT_RUN.split(s))   # split keeps the digit runs: text, digits, text...


def normalize(text: str) -> str:
    """Letters and digits only, separated by single spaces (see the module docstring).

    `"Halo, saya mau BOOKING  ya kak!!"` -> `"halo saya mau booking ya kak"`;
    `"sdh tf 1,5jt"` -> `"sdh tf 1 5 jt"`; `"Café"` -> `"cafe"`.
    """
    s = _folded(text)
    s = s.translate(_ASCII_NON_ALNUM) if s.isascii() else _NON_ALNUM.sub(" ", s)
    return " ".join(_digits_apart(s).split())


def _runs(normalized: str) -> list[tuple[int, int]]:
    """(start, end) of every run of one repeated letter in `normalized`."""
    if not normalized.isascii():
        return [m.span() for m in _LETTER_RUN.finditer(normalized)]
    runs: list[tuple[int, int]] = []
    last = -1
    for _, start, end in _ASCII_DOUBLES.find_matches_as_indexes(normalized):
        if start < last:
            continue                       # inside a run already extended
        letter = normalized[start]
        while end < len(normalized) and normalized[end] == letter:
            end += 1
        runs.append((start, end))
        last = end
    return runs


class SkeletonMap:
    """Maps an offset in the skeleton back to an offset in the normalized text."""

    __slots__ = ("_ends", "_runs", "_shifts")

    def __init__(self, runs: list[tuple[int, int]]) -> None:
        self._runs = runs
        self._ends: list[int] | None = None
        self._shifts: list[int] = []

    def _index(self) -> list[int]:
        # For every collapsed run: its end in the skeleton and the letters dropped so far.
        ends: list[int] = []
        dropped = 0
        for start, end in self._runs:
            dropped += end - start - 1
            ends.append(end - dropped)
            self._shifts.append(dropped)
        self._ends = ends
        return ends

    def __call__(self, offset: int) -> int:
        """The normalized offset of skeleton `offset` (a start or an end offset alike: a
        collapsed run maps to the whole run)."""
        if not self._runs:
            return offset
        i = bisect.bisect_right(self._ends if self._ends is not None else self._index(), offset)
        return offset + (self._shifts[i - 1] if i else 0)


def skeleton_with_map(normalized: str) -> tuple[str, SkeletonMap]:
    """`skeleton(normalized)` and the map of its offsets back to `normalized`."""
    runs = _runs(normalized)
    if not runs:
        return normalized, SkeletonMap(runs)
    pieces, prev = [], 0
    for start, end in runs:
        pieces.append(normalized[prev:start + 1])
        prev = end
    pieces.append(normalized[prev:])
    return "".join(pieces), SkeletonMap(runs)


def skeleton(normalized: str) -> str:
    """Collapse every run of one repeated letter to a single letter; digits stay as they are.

    `"bookinggg"` -> `"boking"`, `"okeee"` -> `"oke"`, `"2000"` -> `"2000"`.
    """
    return skeleton_with_map(normalized)[0]


def clause_tokens(text: str) -> list[str]:
    """Skeleton tokens of `text` with `CLAUSE_BREAK` tokens at clause boundaries.

    The word tokens (all but `CLAUSE_BREAK`) are exactly `skeleton(normalize(text)).split()`.
    `"belum, eh sudah transfer"` -> `["belum", "\\x01", "eh", "sudah", "transfer"]`.
    """
    s = _CLAUSE_PUNCT.sub(_clause_break, _folded(text))
    if s.isascii():
        s = s.translate(_ASCII_NON_ALNUM_KEEP_BREAK)
    else:
        s = _NON_ALNUM_KEEP_BREAK.sub(" ", s)
    return skeleton(_digits_apart(s)).split()


def _clause_break(match: re.Match[str]) -> str:
    """A clause-break token for a run of punctuation, unless it is one separator in a number."""
    s, (i, j) = match.string, match.span()
    if j - i == 1 and s[i] in ".,:" and 0 < i and j < len(s) and s[i - 1].isdigit() \
            and s[j].isdigit():
        return " "
    return f" {CLAUSE_BREAK} "
