"""`funnel keywords show|versions|diff|rollback|preview|sync`, run as operators run them: the
installed `funnel` console script in a subprocess, on the test stack's database and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from funnel_ingest.engine.keywords import KeywordSet
from funnel_ingest.store import keywords as keyword_store
from tests.keyword_cases import (
    CURRENT,
    WITHOUT_BOOKING,
    WITHOUT_RESERVASI,
    csv_text,
    snapshot,
    store_case,
)
from tests.support import empty_engine_tables

ROOT = Path(__file__).resolve().parents[2]
FUNNEL = str(Path(sys.executable).parent / "funnel")
SHEET = "1KeywordSheetOfTheGrowthTeam000000000000000"
NO_SHEET = {"GSHEET_KEY": "", "GSHEET_WORKSHEET": "", "KEYWORDS_CSV": ""}


def funnel(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([FUNNEL, "keywords", *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **NO_SHEET, **env}, timeout=120)


def one_line_error(out: subprocess.CompletedProcess, command: str) -> str:
    assert out.returncode == 1, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr  # no traceback
    assert lines[0].startswith(f"funnel keywords {command}: ")
    return lines[0]


@pytest.fixture
def case(settings, r, kw_db):
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        empty_engine_tables(conn)
        kset = store_case(conn, settings.tz)
        yield conn, kset
        empty_engine_tables(conn)


def test_preview_of_a_csv_reports_the_unbooked_leads_and_writes_nothing(case, r, tmp_path):
    conn, kset = case
    before = snapshot(conn, r)
    csv = tmp_path / "candidate.csv"
    csv.write_text(csv_text(WITHOUT_RESERVASI))
    out = funnel("preview", str(csv))
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert f"against the current version {kset.version}" in text
    assert "(30 days): 17 messages, 6 would be classified differently" in text
    assert "booking        8    2          -6" in text
    assert "ads      3 -> 3 (0)  3 -> 0 (-3)" in text
    assert "direct   5 -> 5 (0)  5 -> 3 (-2)" in text
    assert '"mau reservasi besok ya" (inbound, 5 messages): booking -> (none)' in text
    assert "--force" not in text

    doc = json.loads(funnel("preview", str(csv), "--days", "60", "--json").stdout)
    assert doc["changed_messages"] == 7 and doc["total"]["change"]["bookings"] == -6
    assert doc["candidate_source"] == f"csv:{csv}"
    assert snapshot(conn, r) == before

    csv.write_text(csv_text(WITHOUT_BOOKING))
    assert "publishing it needs --force" in funnel("preview", str(csv)).stdout
    assert "days must be between 1 and 366" in one_line_error(
        funnel("preview", str(csv), "--days", "0"), "preview")
    csv.write_text("stage,keyword\nbookin,x\n")
    assert "row 2: unknown stage 'bookin'" in one_line_error(funnel("preview", str(csv)),
                                                             "preview")
    assert snapshot(conn, r) == before


def test_versions_diff_and_rollback(settings, r, kw_db, tmp_path):
    cfg = settings.replace(gsheet_key="", keywords_csv="")
    a = keyword_store.replace(cfg, CURRENT, redis_client=r).version
    b = keyword_store.replace(cfg, WITHOUT_RESERVASI, redis_client=r).version

    listed = funnel("versions")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[2].startswith(f"*  {b}") and "put" in lines[2] and "2/1/1" in lines[2]
    assert lines[3].startswith(f"   {a}") and "2/2/1" in lines[3]

    diff = funnel("diff", a, b)
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines() == [f"{a} -> {b}: 0 added, 1 removed, 0 changed",
                                        '- booking     "reservasi"']
    assert json.loads(funnel("diff", b, "--json").stdout)["to"] == b
    assert "no keyword version '0123456789abcdef'" in one_line_error(
        funnel("diff", "0123456789abcdef"), "diff")

    back = funnel("rollback", a)
    assert back.returncode == 0, back.stderr
    assert back.stdout.startswith(f"keyword version {a}: 5 keywords from api, now current")
    assert keyword_store.current_version_id(kw_db) == a
    assert r.get("keywords:version").decode() == a
    assert "rollback from cli" in funnel("show").stdout
    assert "no keyword version 'ffffffffffffffff'" in one_line_error(
        funnel("rollback", "f" * 16), "rollback")


def test_under_a_sheet_rollback_and_csv_sync_are_refused_naming_the_sheet(settings, r, kw_db,
                                                                           tmp_path):
    old = KeywordSet.build(WITHOUT_RESERVASI, "sheet:earlier")
    keyword_store.save_version(kw_db, old)
    now = KeywordSet.build(CURRENT, f"sheet:{SHEET}/Keywords")
    keyword_store.save_version(kw_db, now)
    sheet = {"GSHEET_KEY": SHEET, "GSHEET_WORKSHEET": "Keywords"}
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(CURRENT))
    for args, command in [(("rollback", old.version), "rollback"),
                          (("sync", "--csv", str(csv)), "sync"),
                          (("sync", "--source", "csv", "--force"), "sync")]:
        line = one_line_error(funnel(*args, **sheet), command)
        assert f"Google Sheet {SHEET} (worksheet 'Keywords'" in line
    assert keyword_store.current_version_id(kw_db) == now.version
    shown = funnel("show", **sheet).stdout
    assert f"truth    Google Sheet {SHEET} (worksheet 'Keywords')" in shown
    shown = json.loads(funnel("show", "--json", **sheet).stdout)
    assert shown["source_of_truth"]["kind"] == "sheet"


def test_sync_of_a_csv_that_empties_a_stage_needs_force(settings, r, kw_db, tmp_path):
    keyword_store.replace(settings.replace(gsheet_key="", keywords_csv=""), CURRENT,
                          redis_client=r)
    before = keyword_store.current_version_id(kw_db)
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(WITHOUT_BOOKING))
    line = one_line_error(funnel("sync", "--csv", str(csv)), "sync")
    assert "no active booking keyword would remain" in line and "--force" in line
    assert keyword_store.current_version_id(kw_db) == before
    forced = funnel("sync", "--csv", str(csv), "--force")
    assert forced.returncode == 0, forced.stderr
    assert "now current (forced: a stage was emptied)" in forced.stdout
    assert keyword_store.current_version_id(kw_db) != before
