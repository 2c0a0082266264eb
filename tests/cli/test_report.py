"""`funnel send-mock | export | report`, and the original entry points `tests/mock_source.py`
and `tests/export_report.py` run as scripts."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import time
from datetime import date, timedelta
from pathlib import Path

import psycopg
import pytest

from funnel_ingest.cli import main
from funnel_ingest.report.query import REPORT_COLUMNS
from tests.support import DAY, hand_computed_rows, insert, lead

ROOT = Path(__file__).resolve().parents[2]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"


def api_csv(api, key, **params) -> bytes:  # noqa: F811
    resp = api.client.get("/funnel-report", params={"format": "csv", **params}, headers=key)
    assert resp.status_code == 200
    return resp.content


def rows_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def script_env(stack_env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**os.environ, **stack_env, **extra}


# ---------------------------------------------------------------------------------------------
# export


def test_export_writes_the_same_csv_as_the_api(api, funnel_db, key, tmp_path, capsys):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    out = tmp_path / "report.csv"
    assert main(["export", "--output", str(out), "--no-progress"]) == 0
    assert out.read_bytes() == api_csv(api, key)
    assert "wrote 8 leads (first .. last) as csv" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.part"))


def test_export_filters_by_date_range_channel_and_campaign(api, funnel_db, key, tmp_path):  # noqa: F811
    insert(funnel_db, [lead("ads", DAY - timedelta(days=1), campaign="c"),
                       lead("ads", DAY, campaign="c", lead_id="keep"),
                       lead("website", DAY, campaign="c"),
                       lead("ads", DAY + timedelta(days=1), lead_id="other-campaign"),
                       lead("ads", DAY + timedelta(days=2), campaign="c")])
    out = tmp_path / "ads.csv"
    code = main(["export", "--from", "2025-10-01", "--to", "2025-10-02", "--channel", "ads",
                 "--campaign", "c", "-o", str(out), "--no-progress"])
    assert code == 0
    table = rows_of(out.read_text())
    assert tuple(table[0]) == REPORT_COLUMNS
    assert [r[REPORT_COLUMNS.index("lead_id")] for r in table[1:]] == ["keep"]
    assert out.read_bytes() == api_csv(api, key, start="2025-10-01", end="2025-10-02",
                                       channel="ads", campaign="c")


def test_export_refuses_a_reversed_range_and_a_bad_s3_address(funnel_db, tmp_path, capsys):  # noqa: F811
    assert main(["export", "--from", "2025-10-05", "--to", "2025-10-01", "-o",
                 str(tmp_path / "x.csv")]) == 2
    assert "start (2025-10-05) is after end (2025-10-01)" in capsys.readouterr().err
    assert main(["export", "-o", "s3://bucket-only"]) == 2
    assert "s3://BUCKET/KEY" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["export", "--from", "01/10/2025"])
    assert exc.value.code == 2
    assert not (tmp_path / "x.csv").exists()


def test_export_parquet_has_typed_columns_and_the_same_rows(funnel_db, tmp_path):  # noqa: F811
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    insert(funnel_db, hand_computed_rows() + [lead("direct", campaign="x", lead_id="")])
    csv_out, pq_out = tmp_path / "r.csv", tmp_path / "r.parquet"
    assert main(["export", "-o", str(csv_out), "--no-progress"]) == 0
    assert main(["export", "-o", str(pq_out), "--no-progress"]) == 0
    table = pq.read_table(pq_out)
    assert tuple(table.column_names) == REPORT_COLUMNS
    assert table.schema.field("leads_date").type == pa.date32()
    assert table.schema.field("transaction_value").type == pa.int64()
    assert table.schema.field("lead_at").type == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    expected = rows_of(csv_out.read_text())[1:]
    assert len(rows) == len(expected) == 9
    for got, want in zip(rows, expected):
        assert got["lead_id"] == want[REPORT_COLUMNS.index("lead_id")]
        assert (str(got["transaction_value"]) if got["transaction_value"] is not None
                else "") == want[5]
        assert got["leads_date"].isoformat() == want[0]
    assert rows[0]["lead_id"] == "" and rows[0]["phone"] is not None  # "" stays "", not null
    assert rows[0]["booking_at"] is None


def test_export_to_s3_as_csv_and_parquet(funnel_db, tmp_path, s3_client, settings):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    local = tmp_path / "r.csv"
    assert main(["export", "-o", str(local), "--no-progress"]) == 0
    bucket = settings.reports_bucket
    assert main(["export", "-o", f"s3://{bucket}/exports/test.csv", "--no-progress"]) == 0
    body = s3_client.get_object(Bucket=bucket, Key="exports/test.csv")["Body"].read()
    assert body == local.read_bytes()
    pytest.importorskip("pyarrow")
    assert main(["export", "-o", f"s3://{bucket}/exports/test.parquet", "--no-progress"]) == 0
    obj = s3_client.get_object(Bucket=bucket, Key="exports/test.parquet")
    assert obj["Body"].read()[:4] == b"PAR1"


def test_export_shows_a_progress_bar(funnel_db, tmp_path, capsys):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    assert main(["export", "-o", str(tmp_path / "r.csv")]) == 0
    err = capsys.readouterr().err
    assert "rows" in err and "8/8" in err


# ---------------------------------------------------------------------------------------------
# report


def test_report_prints_the_summary_table(funnel_db, capsys):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    assert main(["report", "--from", "2025-10-01", "--to", "2025-10-01"]) == 0
    out = capsys.readouterr().out
    assert "lead dates 2025-10-01 .. 2025-10-01 (Asia/Jakarta)" in out
    ads = next(line for line in out.splitlines() if " ads " in line)
    for cell in ("5", "4", "3", "80.0%", "75.0%", "60.0%", "Rp 3.500.000", "Rp 1.166.667",
                 "2m / 4m", "20m / 44m"):
        assert cell in ads, (cell, ads)
    total = next(line for line in out.splitlines() if "all channels" in line)
    assert "62.5%" in total and "50.0%" in total


def test_report_json_is_the_api_summary(api, funnel_db, key, capsys):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    assert main(["report", "--json", "--channel", "ads", "--channel", "website"]) == 0
    printed = json.loads(capsys.readouterr().out)
    body = api.client.get("/funnel-report", params={"channel": ["ads", "website"]},
                          headers=key).json()
    assert printed["summary"] == body["summary"]
    assert main(["report", "--json", "--daily"]) == 0
    daily = json.loads(capsys.readouterr().out)
    assert daily["days"] == api.client.get("/funnel-report/daily", headers=key).json()["days"]


def test_report_daily_table_and_empty_selection(funnel_db, capsys):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    assert main(["report", "--daily"]) == 0
    out = capsys.readouterr().out
    assert "2025-10-01" in out and "website" in out
    assert main(["report", "--channel", "nowhere"]) == 0
    assert "no leads for these filters" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# send-mock


def stream_sources(r) -> list[str]:
    return [fields[b"source"].decode() for _, fields in r.xrange("funnel:messages")]


def test_send_mock_posts_signed_simulator_traffic_and_summarises(api, r, capsys):
    assert main(["send-mock", "--url", api.base_url, "--count", "60", "--seed", "12",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "sent:      60 webhooks" in out
    assert "accepted:  60 (2xx)" in out and "rejected:  0" in out
    assert "latency:   p50" in out and "p95" in out
    appended = r.xlen("funnel:messages") + r.xlen("funnel:statuses")
    assert appended >= 60 and f"messages:  {appended:,} appended, 0 redeliveries" in out
    assert set(stream_sources(r)) == {"whatsapp", "qontak", "generic"}
    # the same seed sends the same message ids: the API recognises the redeliveries
    assert main(["send-mock", "--url", api.base_url, "--count", "60", "--seed", "12",
                 "--no-progress"]) == 0
    assert "messages:  0 appended" in capsys.readouterr().out
    assert r.xlen("funnel:messages") + r.xlen("funnel:statuses") == appended


def test_send_mock_keeps_to_the_rate_and_the_sources(api, r, capsys):
    t = time.monotonic()
    assert main(["send-mock", "--url", api.base_url, "--count", "20", "--rate", "40",
                 "--sources", "qontak", "--no-progress"]) == 0
    assert time.monotonic() - t >= 19 / 40
    assert set(stream_sources(r)) == {"qontak"}
    assert "accepted:  20" in capsys.readouterr().out


def test_send_mock_reports_rejections_and_exits_1(api, r, capsys, monkeypatch):
    from funnel_ingest.settings import get_settings

    monkeypatch.setenv("WEBHOOK_TOKEN", "not-the-api-token")
    monkeypatch.setenv("WEBHOOK_HMAC_SECRET", "")
    try:
        assert main(["send-mock", "--url", api.base_url, "--count", "6", "--sources",
                     "generic,qontak", "--no-progress"]) == 1
    finally:
        get_settings.cache_clear()  # no wrong token cached for later tests
    out = capsys.readouterr().out
    assert "accepted:  0" in out and "rejected:  6 (403: 6)" in out


def test_send_mock_refuses_unknown_sources(capsys):
    assert main(["send-mock", "--sources", "telegram"]) == 2
    assert "--sources" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# the original entry points, as scripts


def test_mock_source_script_sends_to_funnel_api_url(api, r, stack_env):
    out = subprocess.run(
        [str(VENV_PYTHON), "tests/mock_source.py", "--count", "30", "--no-progress"],
        cwd=ROOT, env=script_env(stack_env, FUNNEL_API_URL=api.base_url),
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "accepted:  30 (2xx)" in out.stdout
    assert r.xlen("funnel:messages") > 0


def test_export_report_script_writes_funnel_report_csv_in_the_working_dir(
        funnel_db, stack_env, tmp_path):  # noqa: F811
    insert(funnel_db, hand_computed_rows())
    out = subprocess.run([str(VENV_PYTHON), str(ROOT / "tests" / "export_report.py")],
                         cwd=tmp_path, env=script_env(stack_env), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    table = rows_of((tmp_path / "funnel_report.csv").read_text())
    assert tuple(table[0]) == REPORT_COLUMNS and len(table) == 9


def test_the_scripts_run_with_a_plain_python3_too(stack_env, tmp_path):
    """`python3 tests/export_report.py` as the original README ran it: a python without the
    project's packages re-runs the script with the repository's .venv."""
    plain = "/usr/bin/python3"
    if not Path(plain).exists():
        pytest.skip("no /usr/bin/python3")
    probe = subprocess.run([plain, "-c", "import httpx"], capture_output=True)
    if probe.returncode == 0:
        pytest.skip("/usr/bin/python3 has the dependencies: nothing to re-run")
    out = subprocess.run([plain, str(ROOT / "tests" / "export_report.py"), "--help"],
                         cwd=tmp_path, env=script_env(stack_env), capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "s3://BUCKET/KEY" in out.stdout


def test_original_readme_flow_mock_source_then_export_report(api, r, funnel_db, stack_env,  # noqa: F811
                                                               settings, tmp_path):
    """README of the original project: `python3 tests/mock_source.py`, the worker turns the
    messages into the funnel, `python3 tests/export_report.py` writes the CSV."""
    from funnel_ingest.store.keywords import current_classifier
    from tests.support import drain_all

    sent = subprocess.run(
        [str(VENV_PYTHON), "tests/mock_source.py", "--count", "120", "--seed", "5",
         "--no-progress"], cwd=ROOT, env=script_env(stack_env, FUNNEL_API_URL=api.base_url),
        capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr[-2000:]
    with psycopg.connect(settings.database_url) as conn:
        drain_all(conn, r, settings, current_classifier(conn, r, settings))
        leads = conn.execute("SELECT count(*) FROM funnel").fetchone()[0]
    assert leads > 0
    out = subprocess.run([str(VENV_PYTHON), str(ROOT / "tests" / "export_report.py")],
                         cwd=tmp_path, env=script_env(stack_env), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    table = rows_of((tmp_path / "funnel_report.csv").read_text())
    assert len(table) == leads + 1
    today = date.today()
    assert all(today - timedelta(days=3) <= date.fromisoformat(row[0]) <= today + timedelta(1)
               for row in table[1:])
    # the funnel's channels, the keyword list's (social, referral) and the CRM labels the
    # simulator's generic rooms carry (kept as the channel since issue 12)
    assert {row[1] for row in table[1:]} <= {"ads", "website", "campaign_blast", "direct",
                                              "social", "referral", "tiktok", "event_jakarta"}
