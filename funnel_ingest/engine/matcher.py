"""Find funnel keywords in chat messages: one Aho-Corasick pass, then Indonesian-aware filters.

How a keyword matches (docs/funnel.md, Matching):

1. Keywords and messages go through the same `text.normalize` + `text.skeleton`, so case,
   accents, punctuation, spacing and elongation ("bookinggg", "okeee") do not matter.
2. **Whole words only.** The automaton runs over `" " + skeleton + " "` with every pattern padded
   by spaces, so a pattern can only start and end at word boundaries: "book" never matches
   "facebook", "dp" never "dpt", "tf" never "gift".
3. **Indonesian affixes.** For every keyword word of at least `AFFIX_MIN_LETTERS` letters the
   affixed forms are generated at compile time (`word_forms`): prefixes di-, ke-, se-, ter-,
   ber-, ku-, nge-, the nasal prefixes me(N)-/pe(N)- with assimilation (b/f/v -> mem-, p -> mem-
   dropping the p, d/c/j/z -> men-, t -> men- dropping the t, s -> meny- dropping the s, k ->
   meng- dropping the k, vowels/g/h -> meng-; for p/t/s/k loanwords the unassimilated form is
   generated too: "mentransfer", "mengkonfirmasi") and the colloquial bare nasal (ng-/ny-:
   "ngorder", "nyetor", "ngirim"); suffixes -kan, -an, -i, -in (and English -ed/-ing, which
   Indonesian verbs on: "bookingkan", "bookingin") followed by
   -nya, -ku, -mu, -lah, -kah, -pun. So "pesan" also finds "dipesan", "memesan", "pemesanan",
   "pesanannya"; "bayar" finds "dibayar", "bayarnya", "pembayaran". In a phrase the first word
   takes prefixes and derivational suffixes, the last word takes particles ("kirim dana" ->
   "mengirimkan dananya"). Shorter words (va, hai) match as whole words, with "-nya" allowed
   on a phrase's last word ("dpnya"); a short abbreviation made of consonants only (tf, trf,
   byr, dp) also takes di-, -in, -kan and -nya ("ditf", "ditrf", "dibyr", "tfnya", "ditfin"):
   abbreviations are verbs as much as the words they shorten.
3b. **Typos.** A message word that is no keyword form but one edit away (a letter added,
   dropped or changed, or two neighbours swapped: optimal string alignment distance 1) from a
   form of at least `TYPO_MIN_LETTERS` letters of a booking or payment keyword word
   (`TYPO_STAGES`) of at least `TYPO_MIN_ROOT` letters, with the same first letter, is read as
   that form ("trasnfer", "ditrasnfer", "pembyaran" of "bayar", "reservsi"). Short forms
   ("bayr") and the forms of shorter keyword words never match a typo ("hanya" is not
   "hai-nya", "terbatas" not "ter-atas"), so no short word becomes a keyword; opening keywords
   are common words and take no typos ("limit harian" is not "harga-an").
4. **Negation.** A hit is `negated` when one of the `NEGATION_WINDOW` words before it is a
   negator (`NEGATORS`: belum, tidak, gak, batal, cancel, ...) and neither a clause break
   (. , ; : ? ! newline) nor a contrast or re-affirmation word (`SCOPE_BREAKERS`: tapi, namun,
   sudah, udah, ...) lies between: "belum bayar", "gak jadi booking", "batal pesan" are negated;
   "belum, eh sudah transfer" is not. A cancel word (`CANCEL_WORDS`: batal, dibatalkan, cancel,
   gagal, ...) among the `CANCEL_WINDOW` words after a hit in the same clause negates it too:
   "bookingnya dibatalkan", "transfernya gagal".
5. **Noun compounds.** A booking keyword (any form) directly followed by a price or list
   noun (`PRICE_HEAD_NOUNS`: harga, tarif, biaya, list, pricelist) names a list, not an action
   ("minta daftar harga", "order list"), and is dropped. Catalogue nouns (`CATALOGUE_HEAD_NOUNS`:
   menu, paket, isi, produk, layanan, ...) do the same only after a keyword that is itself the
   noun "list" (`LIST_NOUNS`: daftar): "daftar menu" and "daftar isi" are lists, while
   "booking paket honeymoon" and "pesan menu A" are actions on an object. A modal or aspect
   word right before the keyword makes it a verb again (`VERBAL_MARKERS`: "mau daftar paket"
   is a registration).
6. **Prefilled openings.** Opening keywords of at least `FUZZY_MIN_WORDS` words are the
   prefilled text of an ad or a wa.me link, which people edit. Without an exact hit, the best
   window of the message start is compared with `rapidfuzz.fuzz.ratio` (`fuzzy_opening_score`);
   a score of at least `FUZZY_THRESHOLD` is a hit.
7. Among hits of one stage, a hit inside a longer hit is dropped ("halo" inside the prefilled
   "Halo, saya tertarik dengan promo ini"; "transfer" inside "bukti transfer").

Hits carry offsets into `text.normalize(message)`.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import ahocorasick_rs
from rapidfuzz import fuzz
from rapidfuzz.distance import OSA

from funnel_ingest.engine.model import Hit, Keyword, Stage
from funnel_ingest.engine.text import (
    CLAUSE_BREAK,
    clause_tokens,
    normalize,
    skeleton,
    skeleton_with_map,
)

__all__ = [
    "AFFIX_MIN_LETTERS",
    "CATALOGUE_HEAD_NOUNS",
    "FUZZY_MIN_WORDS",
    "FUZZY_THRESHOLD",
    "LIST_HEAD_NOUNS",
    "LIST_NOUNS",
    "NEGATORS",
    "PRICE_HEAD_NOUNS",
    "Matcher",
    "fuzzy_opening_score",
    "word_forms",
]

AFFIX_MIN_LETTERS = 4
"""Keyword words shorter than this match only as whole words (va, hai, hi), consonant-only
abbreviations (tf, trf, byr, dp) with di-, -in, -kan, -nya."""

TYPO_MIN_LETTERS = 6
"""Keyword forms (skeletons) at least this long also match a one-edit typo of themselves."""

TYPO_MIN_ROOT = 5
"""...when they are forms of a keyword word at least this long ("pembayaran" of "bayar")."""

TYPO_STAGES = frozenset({"booking", "transaction"})
"""...of a keyword of these stages: opening keywords are common words ("harga": "harian" is one
edit from "harga-an"), and edited prefilled openings have their own similarity match."""

NEGATION_WINDOW = 3
"""How many words before a hit are searched for a negator."""

FUZZY_MIN_WORDS = 4
"""Opening keywords with at least this many words get the similarity fallback."""

FUZZY_THRESHOLD = 88.0
"""`fuzzy_opening_score` needed for an edited prefilled text to count as that opening."""

FUZZY_MIN_SHARED = 0.6
"""Share of a prefilled text's words that an edited copy keeps (checked before scoring)."""

_MAX_SKIP = 2   # prefilled text may follow up to two words ("kak, ...")


# --- Indonesian morphology -------------------------------------------------------------------

_SIMPLE_PREFIXES = ("", "di", "ke", "se", "ter", "ber", "ku", "nge")
_DERIVATIONAL_SUFFIXES = ("", "kan", "an", "i", "in", "ed", "ing", "ingkan", "ingin")
_PARTICLE_SUFFIXES = ("", "nya", "ku", "mu", "lah", "kah", "pun")
_VOWELS = frozenset("aeiou")


def _nasal_stems(word: str) -> list[tuple[str, str]]:
    """(nasal, stem) pairs for the me(N)-/pe(N)- prefixes of `word`, with assimilation.

    The first pair is the standard form; for p/t/s/k an unassimilated pair follows, because
    loanwords keep their first consonant ("mentransfer", "mengkonfirmasi", "memproses").
    """
    first = word[0]
    if first in _VOWELS or first in "gh":
        return [("ng", word)]
    if first in "bfv":
        return [("m", word)]
    if first == "p":
        return [("m", word[1:]), ("m", word)]
    if first in "dcjz":
        return [("n", word)]
    if first == "t":
        return [("n", word[1:]), ("n", word)]
    if first == "s":
        return [("ny", word[1:]), ("n", word)]
    if first == "k":
        return [("ng", word[1:]), ("ng", word)]
    return [("", word)]  # l, m, n, r, w, y: melunasi, pelunasan, merevisi


def _prefixed(word: str) -> list[str]:
    """`word` and its prefixed forms (no suffixes)."""
    forms = [p + word for p in _SIMPLE_PREFIXES]
    for nasal, stem in _nasal_stems(word):
        forms.append("me" + nasal + stem)
        forms.append("pe" + nasal + stem)
    first = word[0]
    if first in _VOWELS:
        forms.append("ng" + word)            # ngorder, ngambil
    elif first == "k":
        forms.append("ng" + word[1:])        # ngirim
    elif first in "sc":
        forms.append("ny" + word[1:])        # nyetor, nyari
    return forms


def _is_affixable(word: str) -> bool:
    return len(word) >= AFFIX_MIN_LETTERS and word.isalpha()


def word_forms(word: str, *, prefixes: bool = True, derivational: bool = True,
               particles: bool = True) -> set[str]:
    """The surface forms of one normalized keyword word (before `skeleton`).

    Words shorter than `AFFIX_MIN_LETTERS` or containing digits only take "-nya", and only when
    `particles` is set. `word_forms("pesan")` contains "dipesan", "memesan", "pemesanan",
    "pesanannya".
    """
    if not _is_affixable(word):
        if word.isalpha() and _VOWELS.isdisjoint(word):   # tf, trf, byr, dp: abbreviations
            stems = [word, "di" + word] if prefixes else [word]
            derivs = ("", "in", "kan") if derivational else ("",)
            parts = ("", "nya") if particles else ("",)
            return {stem + d + p for stem in stems for d in derivs for p in parts}
        return {word, word + "nya"} if particles else {word}
    stems = _prefixed(word) if prefixes else [word]
    derivs = _DERIVATIONAL_SUFFIXES if derivational else ("",)
    parts = _PARTICLE_SUFFIXES if particles else ("",)
    return {stem + d + p for stem in stems for d in derivs for p in parts}


def _phrase_forms(words: list[str]) -> Iterator[tuple[str, bool]]:
    """(surface form, is_bare) of a keyword made of normalized `words`."""
    bare = " ".join(words)
    if len(words) == 1:
        firsts, lasts = word_forms(words[0]), {""}
    else:
        firsts = word_forms(words[0], particles=False)
        lasts = word_forms(words[-1], prefixes=False, derivational=False)
    middle = words[1:-1]
    for first in firsts:
        for last in lasts:
            form = " ".join([first, *middle, last]) if len(words) > 1 else first
            yield form, form == bare


# --- Negation and noun compounds ---------------------------------------------------------------

NEGATORS = frozenset(skeleton(w) for w in (
    "belum", "blm", "blom", "blum", "belom", "tidak", "tdk", "gak", "ga", "gk", "ngk", "nggak",
    "ngga", "enggak", "engga", "kagak", "ndak", "nda", "tak", "bukan", "bkn", "jangan", "jgn",
    "batal", "gajadi", "cancel", "tanpa", "gausah", "gaush", "batalkan", "batalin",
    "dibatalkan", "dibatalin", "membatalkan", "cancelled", "canceled",
))
"""Words that negate a keyword among the `NEGATION_WINDOW` words after them ("ga jadi" is "ga")."""

CANCEL_WORDS = frozenset(skeleton(w) for w in (
    "batal", "dibatalkan", "dibatalin", "batalkan", "batalin", "cancel", "dicancel", "canceled",
    "cancelled", "gagal", "ditolak", "gajadi",
))
"""Words that negate the keyword before them, within `CANCEL_WINDOW` words: "bookingnya
dibatalkan", "transfernya gagal"."""

CANCEL_WINDOW = 2
"""How many words after a hit are searched for a cancel word."""

_NEGATION_WORDS = NEGATORS | CANCEL_WORDS

SCOPE_BREAKERS = frozenset(skeleton(w) for w in (
    "tapi", "tp", "tetapi", "namun", "sudah", "udah", "sdh", "udh", "dah", "telah",
))
"""Contrast and re-affirmation words that end a negator's scope ("belum, eh sudah transfer")."""

PRICE_HEAD_NOUNS = frozenset(skeleton(w) for w in (
    "harga", "hrg", "tarif", "biaya", "list", "pricelist", "price", "ratecard",
))
"""Price and list nouns: after any bare booking keyword they make a noun phrase ("daftar harga",
"order list", "booking pricelist")."""

CATALOGUE_HEAD_NOUNS = frozenset(skeleton(w) for w in (
    "menu", "paket", "isi", "produk", "layanan", "katalog", "kamar", "kelas", "program", "acara",
))
"""Catalogue nouns: after a keyword that is itself a list noun (`LIST_NOUNS`) they make a noun
phrase ("daftar menu", "daftar paket", "daftar isi"); after a verb they are its object
("booking paket honeymoon", "pesan menu A" stay bookings)."""

LIST_NOUNS = frozenset(skeleton(w) for w in ("daftar", "list", "katalog"))
"""Keywords that double as the noun "list"."""

LIST_HEAD_NOUNS = PRICE_HEAD_NOUNS | CATALOGUE_HEAD_NOUNS
"""All nouns the noun-compound rule looks at."""

VERBAL_MARKERS = frozenset(skeleton(w) for w in (
    "mau", "mw", "mo", "ingin", "pengen", "pingin", "pgn", "akan", "jadi", "jd", "sudah", "udah",
    "sdh", "bisa", "boleh", "sekalian", "langsung", "tolong", "mohon",
))
"""Modal and aspect words that make the following keyword a verb again ("mau daftar paket")."""

_TYPO_PARTICLES = ("", *(p for p in _PARTICLE_SUFFIXES if p))
"""Particles set aside when a token is looked up as a typo ("trasnfernya")."""


def _best_window(keyword: str, words: list[str], cutoff: float = 0.0
                 ) -> tuple[float, int, int]:
    """(score, first word, word count) of the window of `words` most similar to `keyword`;
    scores below `cutoff` count as 0.

    Windows start within the first `_MAX_SKIP` + 1 words and hold half to one and a half times
    the keyword's word count. `fuzz.ratio` is 100 * (1 - indel / (len(a) + len(b))) and the indel
    distance is at least the length difference, so a window whose length alone keeps it under
    `cutoff` is skipped without computing the ratio.
    """
    n = keyword.count(" ") + 1
    k = len(keyword)
    slack = (100.0 - cutoff) / 100.0          # |len(k) - len(w)| <= slack * (len(k) + len(w))
    lo_len, hi_len = k * (1 - slack) / (1 + slack), k * (1 + slack) / (1 - slack or 1e-9)
    best = (0.0, 0, len(words))
    for skip in range(min(_MAX_SKIP, len(words) - 1) + 1):
        length = -1
        for size in range(1, min(n + n // 2 + 1, len(words) - skip) + 1):
            length += len(words[skip + size - 1]) + 1
            if size < max(1, n - n // 2) or length < lo_len:
                continue
            if length > hi_len:
                break
            score = fuzz.ratio(keyword, " ".join(words[skip:skip + size]),
                               score_cutoff=max(cutoff, best[0]))
            if score > best[0]:
                best = (score, skip, size)
    return best


def fuzzy_opening_score(keyword: str, message: str) -> float:
    """Similarity of a prefilled opening text with the start of a message, 0..100.

    Both are skeleton strings. Prefilled text starts the message; people add a word, drop one,
    fix a typo or append a question. The score is the best `fuzz.ratio` (normalized Indel
    similarity) of `keyword` against a window of whole words of `message` that starts within
    its first three words and is between half and one and a half times the keyword's word
    count: text after the window or a greeting before it costs nothing, every edit inside the
    window costs its characters. A message much shorter than the keyword cannot score high, so
    a fragment ("promo ini") never passes for the whole prefilled text.
    """
    return _best_window(keyword, message.split(" "))[0]


def _partial_cutoff(threshold: float) -> float:
    """A `fuzz.partial_ratio` that any message passing `threshold` in `_best_window` reaches.

    A window W with ratio r >= t against keyword K has len(W)/len(K) = x within
    [(1-s)/(1+s), (1+s)/(1-s)], s = 1 - t. The len(K) characters P of the message from W's
    start then share an LCS with K of at least r(1+x)/2 * len(K) when x <= 1 (P holds W) and
    (r(1+x)/2 - (x-1)) * len(K) when x > 1 (P is W cut short), and partial_ratio >= LCS/len(K).
    """
    t = threshold / 100.0
    s = 1.0 - t
    x_lo, x_hi = (1 - s) / (1 + s), (1 + s) / (1 - s)
    return 100.0 * min(t * (1 + x_lo) / 2, t * (1 + x_hi) / 2 - (x_hi - 1)) - 1.0


_PARTIAL_CUTOFF = _partial_cutoff(FUZZY_THRESHOLD)


# --- Compiled keyword set ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Entry:
    """One active keyword as compiled."""

    stage: Stage
    keyword: str
    channel: str | None
    key: str          # skeleton of the normalized keyword
    rank: tuple[bool, int]  # among hits on one span: keywords with a channel first, then order


@dataclass(frozen=True, slots=True)
class _Fuzzy:
    """A prefilled opening text, for the similarity fallback."""

    index: int               # into Matcher._entries
    key: str                 # skeleton
    words: frozenset[str]    # its distinct words
    min_shared: float        # how many of them an edited copy keeps at least


class Matcher:
    """All active keywords of one version, compiled once; `find` is thread-safe."""

    def __init__(self, keywords: Iterable[Keyword]) -> None:
        self._all = list(keywords)
        self._entries: list[_Entry] = []
        payloads: dict[str, list[tuple[int, bool]]] = {}
        fuzzy: list[_Fuzzy] = []
        seen: set[tuple[str, str, str | None]] = set()
        for kw in self._all:
            if not kw.active:
                continue
            words = normalize(kw.keyword).split()
            if not words:
                continue
            key = skeleton(" ".join(words))
            if (kw.stage, key, kw.channel) in seen:
                continue
            seen.add((kw.stage, key, kw.channel))
            index = len(self._entries)
            self._entries.append(_Entry(kw.stage, kw.keyword, kw.channel, key,
                                        (kw.channel is None, index)))
            if kw.stage == "opening" and len(words) >= FUZZY_MIN_WORDS:
                forms: Iterable[tuple[str, bool]] = [(" ".join(words), True)]
                distinct = frozenset(key.split())
                fuzzy.append(_Fuzzy(index, key, distinct, FUZZY_MIN_SHARED * len(distinct)))
            else:
                forms = _phrase_forms(words)
            for form, bare in forms:
                payloads.setdefault(f" {skeleton(form)} ", []).append((index, bare))
        self._patterns = list(payloads)
        self._payloads = [payloads[p] for p in self._patterns]
        # typos: every word of a surface form is known; the forms of at least TYPO_MIN_LETTERS
        # letters of keyword words of at least TYPO_MIN_ROOT letters get a deletion index (a
        # typo and its form share a key)
        self._known_words = frozenset(w for p in self._patterns for w in p.split())
        typo_index: dict[str, set[str]] = {}
        long_words = {w for e in self._entries if e.stage in TYPO_STAGES
                      for w in e.key.split() if len(w) >= TYPO_MIN_ROOT and w.isalpha()}
        # (without the particles -nya, -lah, ...: a token's particle is set aside at lookup)
        typo_forms = {skeleton(f) for word in long_words
                      for f in word_forms(word, particles=False)}
        for w in (f for f in typo_forms if len(f) >= TYPO_MIN_LETTERS):
            for i in range(len(w) + 1):
                key = w[:i] + w[i + 1:]
                typo_index.setdefault(key, set()).add(w)
        self._typo_index = {k: tuple(sorted(v)) for k, v in typo_index.items()}
        self._automaton = (ahocorasick_rs.AhoCorasick(self._patterns)
                           if self._patterns else None)
        self._fuzzy = fuzzy
        self._fuzzy_entries = frozenset(f.index for f in fuzzy)
        self._fuzzy_words = frozenset(w for f in fuzzy for w in f.words)
        self._fuzzy_min_shared = min((f.min_shared for f in fuzzy), default=0.0)
        # prefilled text is looked for in the words `_best_window` can reach
        longest = max((f.key.count(" ") + 1 for f in fuzzy), default=0)
        self._fuzzy_head = _MAX_SKIP + longest + longest // 2 + 1
        # a message shorter than every window that could pass is not looked at
        slack = 1.0 - FUZZY_THRESHOLD / 100.0
        self._fuzzy_min_len = min((len(f.key) * (1 - slack) / (1 + slack) for f in fuzzy),
                                  default=float("inf"))

    @property
    def pattern_count(self) -> int:
        """How many surface forms the automaton holds."""
        return len(self._patterns)

    def version_fingerprint(self) -> str:
        """A stable sha256 of the keyword set (order-independent)."""
        rows = sorted(f"{k.stage}\x1f{k.keyword}\x1f{k.channel or ''}\x1f{int(k.active)}"
                      for k in self._all)
        return hashlib.sha256("\x1e".join(rows).encode()).hexdigest()

    # -- matching --------------------------------------------------------------------------------

    def find(self, text: str) -> list[Hit]:
        """Keyword hits in `text`, sorted by start (longest first), with negation marked.

        Offsets are into `normalize(text)`.
        """
        normalized = normalize(text)
        if not normalized or self._automaton is None:
            return []
        form, to_normalized = skeleton_with_map(normalized)
        fixed = self._corrected(form) if self._typo_index else None
        if fixed is not None:
            form, back = fixed
            skeleton_offset = to_normalized
            to_normalized = lambda offset: skeleton_offset(back(offset))  # noqa: E731
        raw = self._exact_hits(form)
        if len(form) >= self._fuzzy_min_len and \
                self._fuzzy_entries.isdisjoint([r[0] for r in raw]):
            raw.extend(self._fuzzy_hits(form))
        if not raw:
            return []
        words = form.split(" ")
        negation = not _NEGATION_WORDS.isdisjoint(words)
        tokens: _TokenIndex | None = None
        # word number of an offset = spaces before it (bisect: counting them per hit would be
        # quadratic on long texts)
        spaces = [i for i, ch in enumerate(form) if ch == " "] if negation else []
        hits = []
        for index, s, e in self._drop_contained(raw):
            entry = self._entries[index]
            negated = False
            if negation:
                first, last = bisect.bisect_left(spaces, s), bisect.bisect_left(spaces, e)
                before = words[max(0, first - NEGATION_WINDOW):first]
                after = words[last + 1:last + 1 + CANCEL_WINDOW]
                if not (NEGATORS.isdisjoint(before) and CANCEL_WORDS.isdisjoint(after)):
                    # a negator is near: only now look for clause breaks in the original text
                    tokens = tokens or _TokenIndex(text)
                    negated = tokens.negated(first, last)
            hits.append(Hit(entry.stage, entry.keyword, entry.channel,
                            to_normalized(s), to_normalized(e), negated))
        return hits

    def _corrected(self, form: str):
        """`form` with its typos of keyword forms corrected (module docstring, 3b) and a map of
        offsets in the corrected text back to `form`; None when nothing was corrected."""
        tokens = form.split(" ")
        changed = False
        index = self._typo_index
        for i, tok in enumerate(tokens):
            if len(tok) < TYPO_MIN_LETTERS - 1 or tok in self._known_words or not tok.isalpha():
                continue
            best: str | None = None
            for particle in _TYPO_PARTICLES:
                if not tok.endswith(particle) or len(tok) - len(particle) < TYPO_MIN_LETTERS - 1:
                    continue
                base = tok[:len(tok) - len(particle)] if particle else tok
                for j in range(len(base) + 1):
                    for target in index.get(base[:j] + base[j + 1:], ()):
                        if target[0] == base[0] and (best is None or target + particle < best) \
                                and OSA.distance(base, target, score_cutoff=1) <= 1:
                            best = target + particle
            if best is not None and best in self._known_words:
                tokens[i] = best
                changed = True
        if not changed:
            return None
        old_starts, new_starts, lengths = [], [], []
        old = new = 0
        for original, fixed in zip(form.split(" "), tokens, strict=True):
            old_starts.append(old)
            new_starts.append(new)
            lengths.append(len(original))
            old += len(original) + 1
            new += len(fixed) + 1

        def back(offset: int) -> int:
            i = bisect.bisect_right(new_starts, offset) - 1
            return old_starts[i] + min(offset - new_starts[i], lengths[i])

        return " ".join(tokens), back

    def _exact_hits(self, form: str) -> list[tuple[int, int, int, bool]]:
        """(entry, start, end, bare) of every whole-word surface form found in `form`."""
        raw: list[tuple[int, int, int, bool]] = []
        entries = self._entries
        found = self._automaton.find_matches_as_indexes(f" {form} ", overlapping=True)
        for pid, s, e in found:
            end = e - 2              # the padded pattern " x " at padded[s:e] is form[s:e-2]
            for index, bare in self._payloads[pid]:
                if entries[index].stage == "booking" and _is_noun_compound(form, s, end):
                    continue
                raw.append((index, s, end, bare))
        return raw

    def _fuzzy_hits(self, form: str) -> list[tuple[int, int, int, bool]]:
        """The best prefilled opening found by similarity at the start of `form`, if any."""
        head_words = form.split(" ", self._fuzzy_head)[:self._fuzzy_head]
        head = set(head_words)
        if len(head & self._fuzzy_words) < self._fuzzy_min_shared:
            return []                                # shares too little with every one
        head_text = " ".join(head_words)
        best: tuple[float, int, int, _Fuzzy] | None = None
        for f in self._fuzzy:
            if len(f.words & head) < f.min_shared:   # an edited copy keeps most words
                continue
            if len(head_text) >= len(f.key) and not fuzz.partial_ratio(
                    f.key, head_text, score_cutoff=_PARTIAL_CUTOFF):
                continue                             # cheap bound: cannot reach the threshold
            score, skip, size = _best_window(f.key, head_words, FUZZY_THRESHOLD)
            if score >= FUZZY_THRESHOLD and (best is None or score > best[0]):
                best = (score, skip, size, f)
        if best is None:
            return []
        _, skip, size, f = best
        start = sum(len(w) + 1 for w in head_words[:skip])   # offsets in `form`
        return [(f.index, start, start + len(" ".join(head_words[skip:skip + size])), False)]

    def _drop_contained(self, raw: list[tuple[int, int, int, bool]]
                        ) -> list[tuple[int, int, int]]:
        """One hit per stage and span, none strictly inside a longer hit of its stage, sorted
        by start then longest first.

        Of several keywords on the same span ("booking", and "book" + -ing, on "bookinggg") the
        one matched in its bare form wins, then one with a channel, then the sheet's order.
        """
        if len(raw) == 1:
            return [raw[0][:3]]
        entries = self._entries
        ordered = sorted(set(raw), key=lambda r: (r[1], -r[2], not r[3], entries[r[0]].rank))
        kept: list[tuple[int, int, int]] = []
        # Every kept hit starts at or before the current one (start order), so the current hit
        # is inside one of its stage exactly when that stage's furthest kept end reaches its
        # end: one comparison per hit instead of a scan of all kept hits (quadratic on texts
        # with many hits).
        furthest: dict[str, int] = {}
        for index, s, e, _ in ordered:
            stage = entries[index].stage
            if furthest.get(stage, -1) >= e:
                continue
            furthest[stage] = e
            kept.append((index, s, e))
        return kept


def _is_noun_compound(form: str, start: int, end: int) -> bool:
    """Is the booking keyword at form[start:end] the head of a list or price noun phrase?"""
    # find/rfind, not slicing the rest of the text: this runs for every booking hit
    stop = form.find(" ", end + 1)
    following = form[end + 1:stop if stop >= 0 else len(form)] if end < len(form) else ""
    following = following if following in LIST_HEAD_NOUNS else following.removesuffix("nya")
    if following not in PRICE_HEAD_NOUNS and not (
            following in CATALOGUE_HEAD_NOUNS and form[start:end] in LIST_NOUNS):
        return False
    preceding = form[form.rfind(" ", 0, start - 1) + 1:start - 1] if start else ""
    return preceding not in VERBAL_MARKERS


class _TokenIndex:
    """Clause-aware tokens of one message, for negation scope."""

    __slots__ = ("_tokens", "_word_at")

    def __init__(self, text: str) -> None:
        self._tokens = clause_tokens(text)
        self._word_at = [i for i, t in enumerate(self._tokens) if t != CLAUSE_BREAK]

    def negated(self, first: int, last: int) -> bool:
        """Is the hit on words `first`..`last` (counted in the skeleton) negated: a negator
        in the clause before it, or a cancel word in the clause right after it?"""
        if last >= len(self._word_at):
            return False
        return self._negator_before(self._word_at[first]) or \
            self._cancelled_after(self._word_at[last])

    def _negator_before(self, position: int) -> bool:
        i, seen = position - 1, 0
        while i >= 0 and seen < NEGATION_WINDOW:
            token = self._tokens[i]
            if token == CLAUSE_BREAK or token in SCOPE_BREAKERS:
                return False
            if token in NEGATORS:
                return True
            seen += 1
            i -= 1
        return False

    def _cancelled_after(self, position: int) -> bool:
        for token in self._tokens[position + 1:position + 1 + CANCEL_WINDOW]:
            if token == CLAUSE_BREAK:
                return False
            if token in CANCEL_WORDS:
                return True
        return False
