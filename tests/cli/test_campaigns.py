"""`funnel campaigns import | list`, and the campaign columns of `funnel export` (CSV and
Parquet), on a funnel drained from provider payloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from funnel_ingest.cli import main
from tests.support import drain_all, insert, lead, post_campaign_payloads

ROOT = Path(__file__).resolve().parents[2]
BUTTON_WAMID = "wamid.HBgLMTU1NTA3ODM4ODEVAgARGBI5QTNDQTVCM0Q0Q0Q2RTY3RTcA"


@pytest.fixture
def drained(api, r, settings, funnel_db, classifier) -> psycopg.Connection:
    post_campaign_payloads(api)
    drain_all(funnel_db, r, settings, classifier)
    funnel_db.commit()
    insert(funnel_db, [lead("campaign_blast", campaign="wamid.unknown-1", lead_id="u1")])
    return funnel_db


def test_import_a_csv_log_then_list_the_campaigns(drained, tmp_path, capsys):
    log = tmp_path / "broadcast_log.csv"
    log.write_text("message_id,campaign_name,sent\n"
                   f"{BUTTON_WAMID},Promo Desember,\n"
                   "wamid.unknown-1,Promo Desember,\n"
                   "wamid.never-answered,Promo Desember,\n", encoding="utf-8")
    assert main(["campaigns", "import", str(log)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (f"imported 3 entries of 1 campaigns from {log}: 2 refs added, "
                           "1 moved, 0 campaigns removed, 2 leads updated")
    assert dict(drained.execute("SELECT lead_id, campaign FROM funnel WHERE lead_id = 'u1'")
                ) == {"u1": "Promo Desember"}
    assert main(["campaigns", "import", str(log)]) == 0            # again: nothing changes
    assert "0 refs added, 0 moved, 0 campaigns removed, 0 leads updated" in \
        capsys.readouterr().out

    assert main(["campaigns", "list", "--json"]) == 0
    listed = {c["campaign"]: c for c in json.loads(capsys.readouterr().out)["campaigns"]}
    promo = listed["Promo Desember"]
    assert (promo["sent"], promo["leads"], promo["reply_rate"]) == (3, 2, 0.666667)
    assert listed["ad:120226305854810726"]["name"] == "Chat with us"

    assert main(["campaigns", "list"]) == 0
    table = capsys.readouterr().out
    assert "Promo Desember" in table and "66.7%" in table and "Chat with us" in table


def test_import_of_json_entries_and_bad_files_give_one_line(drained, tmp_path, capsys):
    entries = tmp_path / "entries.json"
    entries.write_text(json.dumps([{"ad_id": "120226305854810726", "campaign": "CTWA Bali"}]))
    assert main(["campaigns", "import", str(entries)]) == 0
    assert drained.execute("SELECT campaign FROM funnel WHERE ad_id IS NOT NULL"
                           ).fetchone() == ("CTWA Bali",)
    capsys.readouterr()
    bad = tmp_path / "bad.csv"
    bad.write_text("template,campaign\npromo,\n,Nothing\n")
    assert main(["campaigns", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "row 2: campaign (the campaign's name) is missing" in err
    assert "row 3: give exactly one of" in err and "nothing was imported" in err
    assert main(["campaigns", "import", str(tmp_path / "missing.csv")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_the_cli_runs_as_a_command_with_a_one_line_error(drained, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    out = subprocess.run([sys.executable, "-m", "funnel_ingest.cli", "campaigns", "import",
                          str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.count("\n") == 1
    assert "is not JSON" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_export_ends_with_the_campaign_and_its_name_unknown_ids_kept(drained, tmp_path, fmt):
    out = tmp_path / f"report.{fmt}"
    assert main(["export", "--output", str(out), "--no-progress", "--exact-values"]) == 0
    if fmt == "csv":
        import csv
        rows = list(csv.DictReader(out.open(newline="")))
        columns = list(rows[0])
    else:
        import pyarrow.parquet as pq
        table = pq.read_table(out)
        rows, columns = table.to_pylist(), table.column_names
    assert columns[-2:] == ["campaign", "campaign_name"]
    by_id = {r["campaign_id"]: r for r in rows if r["campaign_id"]}
    assert (by_id[BUTTON_WAMID]["campaign"], by_id[BUTTON_WAMID]["campaign_name"]) == (
        "template:promo_desember", "promo_desember")
    assert by_id["wamid.unknown-1"]["campaign"] == "wamid.unknown-1"
    assert by_id["wamid.unknown-1"]["campaign_name"] in ("", None)
    ad = next(r for r in rows if r["ad_id"])
    assert (ad["campaign"], ad["campaign_name"]) == ("ad:120226305854810726", "Chat with us")
