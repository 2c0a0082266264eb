"""Hypothesis strategies for hostile input: the providers' documented payloads (tests/payloads)
mutated structurally, and text built from the tokens the parsers care about."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads"


def _samples() -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {"whatsapp": [], "qontak": [], "generic": []}
    for path in sorted(PAYLOADS.glob("*.json")):
        source = path.name.split("_", 1)[0]
        out[source].append(json.loads(path.read_text()))
    out["generic"].append([copy.deepcopy(d) for d in out["generic"]])  # the array form
    return out


SAMPLES = _samples()
SOURCES = tuple(SAMPLES)

# Strings that break naive code: SQL, paths, header/CRLF injection, format strings, NUL and
# other controls, unicode tricks, numbers as text, huge and empty values.
NASTY_STRINGS = [
    "", " ", "'", '"', "\\", "'; DROP TABLE funnel; --", "$$; DROP TABLE classified_messages; $$",
    "Robert'); DELETE FROM funnel;--", "\x00", "a\x00b", "\\x00", "\\u0000", "%00", "%s%s%s%n",
    "{0}{1}", "%(x)s", "../../etc/passwd", "..\\..\\windows", "/", "%2F", "%2e%2e%2f",
    "a/b/../c", "\r\nX-Injected: 1", "\n", "\t", "\u202e\u0661\u0662", "\ufeff", "\u200b",
    "ＢＯＯＫＩＮＧ Ｒｐ１.５００.０００", "ﬁ", "İ", "ß" * 50, "😀" * 10, "\U0010ffff",
    "0", "-1", "1e309", "NaN", "Infinity", "99999999999999999999999", "0x10", "1.5e3",
    "2025-10-01T09:15:00+07:00", "1749416383", "174941638300", "9999-12-31T23:59:59Z",
    "0001-01-01", "+6281234567890", "081234567890", "6560123456", "wamid." + "A" * 600,
    "x" * 10_000, "<script>alert(1)</script>", "${jndi:ldap://x}", "null", "true",
]
NASTY_NUMBERS = [0, -1, 1, 2**31, 2**63, 2**64 + 1, 10**30, -(10**30), 1.5, -0.0, 1e308,
                 1749416383, 1749416383000, 17494163830000000]

json_scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(NASTY_NUMBERS),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from(NASTY_STRINGS),
    st.text(max_size=40))
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12)


def paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys/indexes) into a JSON document, the root included."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += paths(v, prefix + (i,))
    return out


def get_at(doc: Any, path: tuple) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def set_at(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    get_at(doc, path[:-1])[path[-1]] = value
    return doc


@st.composite
def mutated_documents(draw, source: str | None = None) -> tuple[str, Any]:
    """(source, document): a documented payload of `source` with 1-4 structural mutations —
    a node replaced (nasty string, number, any JSON), deleted, duplicated, wrapped in a list or
    object, nested deep, or a key renamed."""
    source = source or draw(st.sampled_from(SOURCES))
    doc = copy.deepcopy(draw(st.sampled_from(SAMPLES[source])))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(doc)))
        node = get_at(doc, path)
        op = draw(st.sampled_from(("replace", "nasty", "delete", "duplicate", "wrap", "deep",
                                   "rename", "number_as_text")))
        if op == "replace":
            doc = set_at(doc, path, draw(json_values))
        elif op == "nasty":
            doc = set_at(doc, path, draw(st.sampled_from(NASTY_STRINGS)))
        elif op == "delete" and path:
            del get_at(doc, path[:-1])[path[-1]]
        elif op == "duplicate" and path and isinstance(get_at(doc, path[:-1]), list):
            get_at(doc, path[:-1]).append(copy.deepcopy(node))
        elif op == "wrap":
            doc = set_at(doc, path, draw(st.sampled_from(([node], {"value": node}))))
        elif op == "deep":
            depth = draw(st.integers(2, 300))
            doc = set_at(doc, path, json.loads("[" * depth + json.dumps(node) + "]" * depth))
        elif op == "rename" and isinstance(node, dict) and node:
            key = draw(st.sampled_from(sorted(node)))
            node[draw(st.sampled_from(NASTY_STRINGS[:20]))] = node.pop(key)
        elif op == "number_as_text" and isinstance(node, (int, float, str)) \
                and not isinstance(node, bool):
            doc = set_at(doc, path, str(node) if not isinstance(node, str) else
                       draw(st.sampled_from(NASTY_NUMBERS)))
    return source, doc


def encode(draw, doc: Any) -> bytes:
    """JSON bytes of `doc`, with or without \\u escapes for non-ASCII."""
    return json.dumps(doc, ensure_ascii=draw(st.booleans())).encode()


@st.composite
def mutated_bodies(draw, source: str | None = None) -> tuple[str, bytes]:
    source, doc = draw(mutated_documents(source))
    body = encode(draw, doc)
    if draw(st.integers(0, 9)) == 0:  # and now and then a byte-level corruption as well
        i = draw(st.integers(0, max(0, len(body) - 1)))
        body = body[:i] + draw(st.binary(min_size=1, max_size=4)) + body[i + 1:]
    return source, body


# Text made of what the money, date, phone and keyword parsers look for, plus noise.
TOKENS = [
    "rp", "Rp.", "IDR", "rupiah", "rb", "ribu", "k", "jt", "juta", "M", "miliar", "x", "pax",
    "/", "@", "=", "%", "#", "+", ".", ",", ",-", ":", "-", "tgl", "tanggal", "besok", "lusa",
    "senin", "minggu depan", "bulan depan", "jam", "pukul", "sudah", "belum", "transfer", "tf",
    "bayar", "dibayar", "dp", "lunas", "total", "sisa", "booking", "pesan", "promo", "hai",
    "Desember", "des", "12.12", "01/10/2025", "2025-10-01", "19.00", "081234567890", "62",
    "999.999.999.999", "1,5", "1.500.000", "0", "00", "9" * 25, "bookinggg", "ＢＯＯＫ",
    "\u0301", "\n", "?", "!", "'", "\x00", " ", "  ",
]
token_text = st.lists(st.one_of(st.sampled_from(TOKENS), st.integers(0, 10**13).map(str),
                                st.text(max_size=6)), max_size=40).map(" ".join)
any_text = st.one_of(st.text(max_size=300), token_text)
