"""The `keywords` asset, the scheduled sync: its metadata states the source of truth; without a
sheet it publishes the CSV only while that file is in charge of the list (never over a list
published through the API); a list that empties a stage fails the run and keeps the version.
Materialized with Dagster's test API on the test stack; the sheet case fakes only Google's HTTP
endpoints (tests/store/test_sheets.py)."""

from __future__ import annotations

import dagster as dg

from funnel_dagster.defs import assets
from funnel_dagster.defs.resources import GoogleSheetsResource
from funnel_ingest.engine.keywords import KeywordSet
from funnel_ingest.engine.model import Keyword
from funnel_ingest.store import keywords as keyword_store
from tests.keyword_cases import CURRENT, WITHOUT_BOOKING, WITHOUT_RESERVASI, csv_text
from tests.store.test_sheets import KEY, google, rsa_key, sa_file  # noqa: F401 (fixtures)
from tests.support import dagster_resources


def materialize(settings, **sheets: str) -> dg.ExecuteInProcessResult:
    resources = {**dagster_resources(settings), "sheets": GoogleSheetsResource(**sheets)}
    return dg.materialize([assets.keywords], resources=resources, raise_on_error=False)


def metadata(result: dg.ExecuteInProcessResult) -> dict:
    [event] = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def version_of(keywords) -> str:
    return KeywordSet.build(keywords, "x").version


def test_without_a_sheet_the_csv_is_published_only_while_it_is_in_charge(settings, r, kw_db,
                                                                         tmp_path):
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(CURRENT))
    # no version yet: the file is published
    first = metadata(materialize(settings, keywords_csv=str(csv)))
    assert first["published"] is True and first["changed"] is True
    assert first["version"] == version_of(CURRENT) == keyword_store.current_version_id(kw_db)
    assert first["source_of_truth_kind"] == "api"
    assert f"csv:{csv}" in first["source_of_truth"]
    assert first["dagster/row_count"] == len(CURRENT)

    # the file changes while it is in charge: published
    csv.write_text(csv_text(WITHOUT_RESERVASI))
    second = metadata(materialize(settings, keywords_csv=str(csv)))
    assert second["published"] is True and second["version"] == version_of(WITHOUT_RESERVASI)

    # a list published through the API is never overwritten by the scheduled sync ...
    api = keyword_store.replace(settings.replace(keywords_csv=str(csv)), CURRENT, redis_client=r)
    csv.write_text(csv_text([*CURRENT, Keyword("booking", "jadwalkan")]))
    third = metadata(materialize(settings, keywords_csv=str(csv)))
    assert third["published"] is False and third["changed"] is False
    assert third["version"] == api.version == keyword_store.current_version_id(kw_db)
    assert "PUT /keywords" in third["skipped"] and f"csv:{csv}" in third["skipped"]
    assert r.get("keywords:version").decode() == api.version

    # ... nor is a rollback; an explicit sync puts the file back in charge
    keyword_store.rollback(settings, version_of(WITHOUT_RESERVASI), by="cli", redis_client=r)
    fourth = metadata(materialize(settings, keywords_csv=str(csv)))
    assert fourth["published"] is False and "rollback (cli)" in fourth["skipped"]
    keyword_store.sync(settings, csv_path=csv, redis_client=r)
    csv.write_text(csv_text(CURRENT))
    fifth = metadata(materialize(settings, keywords_csv=str(csv)))
    assert fifth["published"] is True and fifth["version"] == version_of(CURRENT)


def test_a_file_that_empties_a_stage_fails_the_run_and_keeps_the_version(settings, r, kw_db,
                                                                        tmp_path):
    csv = tmp_path / "kw.csv"
    csv.write_text(csv_text(CURRENT))
    assert materialize(settings, keywords_csv=str(csv)).success
    csv.write_text(csv_text(WITHOUT_BOOKING))
    result = materialize(settings, keywords_csv=str(csv))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert "no active booking keyword would remain" in failure.step_failure_data.error.message
    assert keyword_store.current_version_id(kw_db) == version_of(CURRENT)
    assert r.smembers("keywords:booking") == {b"reservasi", b"booking"}


def test_with_a_sheet_the_metadata_names_the_sheet(settings, r, kw_db, google,  # noqa: F811
                                                 sa_file):  # noqa: F811
    google.sheet("Keywords", "values_keywords.json")
    meta = metadata(materialize(settings, sheet_key=KEY, service_account_file=str(sa_file)))
    assert meta["source_of_truth_kind"] == "sheet"
    assert KEY in meta["source_of_truth"] and "first worksheet" in meta["source_of_truth"]
    assert meta["published"] is True and meta["source"] == f"sheet:{KEY}"
    assert meta["version"] == keyword_store.current_version_id(kw_db)
