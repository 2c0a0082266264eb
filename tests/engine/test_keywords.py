"""Keyword lists: both sheet layouts, row-numbered errors, active values, duplicates, versions."""

from __future__ import annotations

import random

import pytest

from funnel_ingest.engine.keywords import (
    EmptyKeywordSetError,
    KeywordSet,
    KeywordSetError,
    compute_version,
    default_csv_path,
    diff,
    emptied_stages,
    from_json_items,
    load_csv,
    parse_active,
    parse_rows,
)
from funnel_ingest.engine.model import STAGES, Keyword

TABLE = [
    ["stage", "keyword", "channel", "active"],
    ["opening", "Halo, saya lihat iklan di Facebook", "ads", "TRUE"],
    ["opening", "halo", "", "TRUE"],
    ["booking", "reservasi", "", ""],
    ["booking", "jadwalkan", "", "FALSE"],
    ["transaction", "sudah transfer", "", "ya"],
]


def test_table_layout():
    kws = parse_rows(TABLE)
    assert kws == [
        Keyword("opening", "Halo, saya lihat iklan di Facebook", "ads", True),
        Keyword("opening", "halo", None, True),
        Keyword("booking", "reservasi", None, True),
        Keyword("booking", "jadwalkan", None, False),
        Keyword("transaction", "sudah transfer", None, True),
    ]


def test_table_header_is_case_and_space_insensitive_and_channel_active_optional():
    rows = [[" Stage ", "KEYWORD"], ["Booking", "  book   now "], ["TRANSACTION", "lunas"]]
    assert parse_rows(rows) == [Keyword("booking", "book now"), Keyword("transaction", "lunas")]
    rows = [["Active", "Keyword", "Stage", "Channel"], ["no", "promo", "opening", "campaign_blast"]]
    assert parse_rows(rows) == [Keyword("opening", "promo", "campaign_blast", False)]


def test_original_single_row_layout_any_number_of_rows_empty_cells_skipped():
    rows = [
        ["opening", "booking", "transaction"],
        ["halo", "booking", "sudah transfer"],
        ["hai", "", "lunas"],
        ["", "reservasi", ""],
        [],
    ]
    kws = parse_rows(rows)
    assert {(k.stage, k.keyword) for k in kws} == {
        ("opening", "halo"), ("opening", "hai"), ("booking", "booking"),
        ("booking", "reservasi"), ("transaction", "sudah transfer"), ("transaction", "lunas")}
    assert all(k.active and k.channel is None for k in kws)


def test_original_layout_with_only_some_stage_columns_warns_about_the_missing_stages():
    warnings: list[str] = []
    kws = parse_rows([["Booking"], ["book"], ["order"]], warnings=warnings)
    assert [k.keyword for k in kws] == ["book", "order"]
    assert "no active opening keywords" in warnings
    assert "no active transaction keywords" in warnings


def test_leading_blank_rows_keep_sheet_row_numbers():
    rows = [[], ["", ""], ["stage", "keyword"], ["bogus", "x"]]
    with pytest.raises(KeywordSetError) as info:
        parse_rows(rows)
    assert [(e.row, e.label) for e in info.value.errors] == [(4, "row")]


def test_every_bad_row_is_reported_with_its_row_number():
    rows = [
        ["stage", "keyword", "channel", "active"],
        ["opening", "halo", "", "TRUE"],           # 2 ok
        ["bookin", "reservasi", "", "TRUE"],       # 3 unknown stage
        ["booking", "   ", "", "TRUE"],            # 4 empty keyword
        ["", "", "", ""],                          # 5 blank: skipped
        ["transaction", "lunas", "", "maybe"],     # 6 bad active
        ["", "tanpa stage", "", ""],               # 7 empty stage
        ["booking", "", "", "nope"],               # 8 two problems in one row
    ]
    with pytest.raises(KeywordSetError) as info:
        parse_rows(rows)
    errors = {e.row: e.message for e in info.value.errors}
    assert sorted(errors) == [3, 4, 6, 7, 8]
    assert "unknown stage 'bookin'" in errors[3]
    assert "keyword is empty" in errors[4]
    assert "'maybe'" in errors[6]
    assert "stage is empty" in errors[7]
    assert "keyword is empty" in errors[8] and "'nope'" in errors[8]
    text = str(info.value)
    assert text.startswith("5 bad keyword rows: row 3: ")
    assert "row 8:" in text
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("header", [
    ["kata", "tahap"],
    ["stage", "channel"],                     # no keyword column
    ["stage", "keyword", "opening"],          # both layouts
    ["stage", "keyword", "Stage"],            # a column twice
])
def test_unknown_or_broken_header_is_an_error_on_row_1(header):
    with pytest.raises(KeywordSetError) as info:
        parse_rows([header, ["booking", "book", "x"]])
    assert [e.row for e in info.value.errors] == [1]


def test_extra_columns_are_ignored_with_a_warning():
    warnings: list[str] = []
    kws = parse_rows([["stage", "keyword", "notes"], ["booking", "book", "dari tim sales"]],
                     warnings=warnings)
    assert kws == [Keyword("booking", "book")]
    assert any("notes" in w and "ignored" in w for w in warnings)


@pytest.mark.parametrize("value,expected", [
    ("TRUE", True), ("true", True), ("Yes", True), ("y", True), ("1", True), ("ya", True),
    ("YA", True), ("", True), ("  ", True), (None, True), (True, True),
    ("FALSE", False), ("false", False), ("no", False), ("0", False), ("tidak", False),
    ("Tidak", False), (False, False),
])
def test_active_values(value, expected):
    assert parse_active(value) is expected


@pytest.mark.parametrize("value", ["maybe", "2", "aktif?", "t r u e"])
def test_bad_active_values(value):
    with pytest.raises(ValueError):
        parse_active(value)


def test_duplicates_are_collapsed_with_a_warning_first_row_kept():
    rows = [
        ["stage", "keyword", "channel", "active"],
        ["booking", "Reservasi", "", "TRUE"],
        ["booking", "  reservasi ", "", "TRUE"],     # same after normalization
        ["booking", "ＲＥＳＥＲＶＡＳＩ", "", "FALSE"],  # full-width (NFKC), differs in active
        ["opening", "reservasi", "", "TRUE"],       # another stage: not a duplicate
    ]
    warnings: list[str] = []
    kws = parse_rows(rows, warnings=warnings)
    assert kws == [Keyword("booking", "Reservasi"), Keyword("opening", "reservasi")]
    dupes = [w for w in warnings if "duplicate" in w]
    assert len(dupes) == 2
    assert dupes[0].startswith("row 3:") and "row 2" in dupes[0]
    assert dupes[1].startswith("row 4:") and "differ" in dupes[1]


def test_version_is_stable_under_row_order_and_changes_with_content():
    kws = parse_rows(TABLE)
    shuffled = kws[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != kws
    a = KeywordSet.build(kws, "csv:a")
    b = KeywordSet.build(shuffled, "sheet:b")
    assert a.version == b.version and len(a.version) == 16
    assert int(a.version, 16) >= 0
    assert a.keywords == b.keywords  # canonical order
    assert [k.stage for k in a.keywords] == sorted((k.stage for k in kws), key=STAGES.index)

    changes = [
        kws + [Keyword("booking", "order")],                                  # added
        kws[1:],                                                              # removed
        [Keyword(k.stage, k.keyword, k.channel, not k.active) if k.keyword == "halo" else k
         for k in kws],                                                       # active flipped
        [Keyword(k.stage, k.keyword, "website" if k.keyword == "halo" else k.channel, k.active)
         for k in kws],                                                       # channel
        [Keyword("opening" if k.keyword == "reservasi" else k.stage, k.keyword, k.channel,
                 k.active) for k in kws],                                     # stage
    ]
    versions = {compute_version(c) for c in changes}
    assert len(versions) == len(changes) and a.version not in versions


def test_keyword_set_active_members_per_stage():
    kset = KeywordSet.build(parse_rows(TABLE), "test")
    assert kset.active("booking") == ["reservasi"]  # jadwalkan is inactive
    assert sorted(kset.active("opening")) == ["Halo, saya lihat iklan di Facebook", "halo"]


def test_the_packaged_default_csv_parses_with_no_errors_or_warnings():
    warnings: list[str] = []
    kws = load_csv(default_csv_path(), warnings=warnings)
    assert warnings == []
    assert {k.stage for k in kws} == set(STAGES)
    assert all(k.keyword for k in kws)
    assert any(k.channel == "ads" for k in kws if k.stage == "opening")


def test_csv_with_bom_and_original_layout(tmp_path):
    path = tmp_path / "kw.csv"
    path.write_text("\ufeffopening,booking,transaction\nhalo,booking,lunas\n", encoding="utf-8")
    assert [k.keyword for k in load_csv(path)] == ["halo", "booking", "lunas"]


def test_json_items():
    warnings: list[str] = []
    kws = from_json_items([
        {"stage": "opening", "keyword": "Mau info promo", "channel": "campaign_blast"},
        {"stage": "Booking", "keyword": "book", "active": False},
        {"stage": "transaction", "keyword": "lunas", "active": "ya", "channel": None},
        {"stage": "booking", "keyword": "BOOK"},
    ], warnings=warnings)
    assert kws == [Keyword("opening", "Mau info promo", "campaign_blast", True),
                   Keyword("booking", "book", None, False),
                   Keyword("transaction", "lunas", None, True)]
    assert any(w.startswith("index 3: duplicate") for w in warnings)


def test_json_items_report_every_bad_index():
    with pytest.raises(KeywordSetError) as info:
        from_json_items([
            {"stage": "booking", "keyword": "ok"},
            {"stage": "bookin", "keyword": "x"},
            "not an object",
            {"stage": "opening", "keyword": ""},
            {"stage": "opening", "keyword": "y", "active": "maybe"},
            {"stage": "opening", "keywrod": "typo"},
            {"stage": 3, "keyword": 4, "channel": 5},
        ])
    errors = {e.row: e for e in info.value.errors}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert all(e.label == "index" for e in errors.values())
    assert "keywrod" in errors[5].message
    assert str(info.value).startswith("6 bad keyword rows: index 1: ")


def test_json_body_must_be_an_array():
    with pytest.raises(KeywordSetError):
        from_json_items({"stage": "booking", "keyword": "x"})


def test_empty_inputs_give_no_keywords_and_the_empty_error_reads_well():
    assert parse_rows([]) == []
    assert parse_rows([["stage", "keyword"]]) == []
    assert parse_rows([["opening", "booking", "transaction"], ["", "", ""]]) == []
    assert from_json_items([]) == []
    assert str(EmptyKeywordSetError("sheet:abc")) == "sheet:abc holds no keywords"


# --- comparing versions ----------------------------------------------------------------------

def test_diff_tells_added_removed_and_changed_entries_apart():
    before = parse_rows(TABLE)
    after = [Keyword("opening", "Halo, saya lihat iklan di Facebook", "website"),  # channel
             Keyword("opening", "HALO"),                                        # spelling
             Keyword("booking", "jadwalkan", None, True),                       # reactivated
             Keyword("booking", "booking"),                                     # added
             Keyword("transaction", "sudah transfer")]
    d = diff(before, after)
    assert d.added == (Keyword("booking", "booking"),)
    assert d.removed == (Keyword("booking", "reservasi"),)
    assert [(c.before.keyword, c.after.keyword) for c in d.changed] == [  # canonical order
        ("halo", "HALO"),
        ("Halo, saya lihat iklan di Facebook", "Halo, saya lihat iklan di Facebook"),
        ("jadwalkan", "jadwalkan")]
    stages = d.by_stage()
    assert stages["transaction"] == {"added": [], "removed": [], "changed": []}
    assert stages["opening"]["changed"][1]["after"]["channel"] == "website"
    assert not diff(after, list(reversed(after))) and diff(before, after)


def test_emptied_stages_are_the_stages_that_lose_every_active_keyword():
    before = parse_rows(TABLE)  # booking: reservasi active, jadwalkan inactive
    no_booking = [k for k in before if k.keyword != "reservasi"]
    assert emptied_stages(before, no_booking) == ["booking"]
    assert emptied_stages(before, [Keyword("booking", "x")]) == ["opening", "transaction"]
    assert emptied_stages(no_booking, before) == []  # gaining a stage is no loss
    assert emptied_stages([], before) == []
