"""Every way a user or the daemon launches work, on a real deployment: the sensor's drain runs,
a partition backfill from the UI, the Materialize button on each asset, one tick of every
schedule, the recovery job, and `funnel backfill` from a shell. Each must end SUCCESS with the
expected data (the runs start in new processes with the job's own executor)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from funnel_dagster.definitions import defs
from funnel_ingest.engine.keywords import KeywordSet, default_csv_path, load_csv
from funnel_ingest.store import funnel as store
from funnel_ingest.store import keywords as keyword_store
from tests.faults.harness import funnel_rows
from tests.private_stack import Deployment

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parents[2]
ASSET_JOB = "__ASSET_JOB"

_NODE = """
query Node($key: AssetKeyInput!, $partitions: [String!]) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      partitionKeys
      partitionStats { numMaterialized numPartitions }
      metadataEntries { label __typename
        ... on TableSchemaMetadataEntry { schema { columns { name type } } } }
      latestMaterializationByPartition(partitions: $partitions) {
        partition runId
        metadataEntries { label __typename ... on IntMetadataEntry { intValue }
                          ... on UrlMetadataEntry { url } ... on PathMetadataEntry { path }
                          ... on TextMetadataEntry { text }
                          ... on BoolMetadataEntry { boolValue } }
      }
    }
  }
}
"""
_LATEST = """
query Latest($key: AssetKeyInput!) {
  assetNodeOrError(assetKey: $key) {
    ... on AssetNode {
      assetMaterializations(limit: 1) {
        metadataEntries { label __typename ... on TextMetadataEntry { text }
                          ... on BoolMetadataEntry { boolValue } }
      }
    }
  }
}
"""
_OBSERVATIONS = """
query Observations($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { ... on Asset { assetObservations(limit: 1000) { timestamp } } }
}
"""
_CHECKS = """
query Check($key: AssetKeyInput!, $name: String!) {
  assetCheckExecutions(assetKey: $key, checkName: $name, limit: 1) {
    runId status evaluation { success }
  }
}
"""


def node(dep: Deployment, asset: str, partitions: list[str] | None = None) -> dict:
    return dep.dagster.graphql(_NODE, {"key": {"path": [asset]},
                                       "partitions": partitions})["assetNodeOrError"]


def metadata(entries: list[dict]) -> dict:
    out = {}
    for e in entries:
        out[e["label"]] = next((e[k] for k in ("intValue", "url", "path", "schema", "text",
                                                "boolValue") if k in e),
                               e["__typename"])
    return out


def rebuilt(dep: Deployment) -> set[tuple]:
    """The funnel a full rebuild from the stored messages gives (rolled back afterwards)."""
    with dep.connect() as conn:
        store.rebuild(conn, dep.settings.tz, dep.settings.cycle_rules)
        rows = funnel_rows(conn)
        conn.rollback()
    return rows


def current_funnel(dep: Deployment) -> set[tuple]:
    with dep.connect() as conn:
        return funnel_rows(conn)


def succeeded(dep: Deployment, run_id: str, timeout: float = 180) -> dict:
    run = dep.dagster.wait_run(run_id, timeout)
    assert run["status"] == "SUCCESS", (
        f"run {run_id} ({run['jobName']}) ended {run['status']}; see "
        f"{dep.dagster.base_url}/runs/{run_id} and {dep.dagster.daemon_log}")
    return run


# --------------------------------------------------------------------------- the sensor


def test_the_sensor_drained_the_traffic_into_the_reference_funnel(deployment: Deployment):
    from funnel_ingest.local.processes import wait_for

    assert current_funnel(deployment) == deployment.plan.reference

    def finished() -> list[dict]:  # the stream is trimmed a moment before a run reports
        runs = deployment.dagster.runs(**{"dagster/sensor_name": "message_stream_sensor"})
        return runs if runs and all(r["status"] not in ("QUEUED", "STARTING", "STARTED")
                                    for r in runs) else []

    runs = wait_for(finished, 60, 0.5, "the sensor's drain runs finished")
    assert all(r["status"] == "SUCCESS" for r in runs), runs


def test_quiet_sensor_ticks_say_why_they_skipped(deployment: Deployment):
    def skipped() -> list[dict]:
        ticks = deployment.dagster.sensor_ticks("message_stream_sensor", limit=50)
        return [t for t in ticks if t["status"] == "SKIPPED"]

    from funnel_ingest.local.processes import wait_for
    ticks = wait_for(skipped, 30, 1, "a skipped sensor tick")
    assert all(t["skipReason"] for t in ticks), ticks
    assert any(t["skipReason"].startswith("no new messages") for t in ticks), ticks


def test_the_stream_backlog_is_recorded_when_it_changes_not_every_tick(deployment: Deployment):
    from funnel_ingest.local.processes import wait_for

    def quiet_ticks() -> list[dict]:
        ticks = deployment.dagster.sensor_ticks("message_stream_sensor", limit=1000)
        return ticks if sum(t["status"] == "SKIPPED" for t in ticks) >= 3 else []

    ticks = wait_for(quiet_ticks, 40, 1, "three quiet sensor ticks")
    observed = deployment.dagster.graphql(_OBSERVATIONS, {"key": {"path": ["message_stream"]}})
    events = observed["assetOrError"]["assetObservations"]
    assert events, "the first tick records the backlog"
    # one record when the backlog appeared, one or a few while it drained, one when empty
    assert len(events) < len(ticks) and len(events) <= 6, (len(events), len(ticks))


def test_partitions_start_at_the_first_day_with_data_and_are_all_filled(deployment: Deployment):
    info = node(deployment, "classified_messages")
    first = min(deployment.days)
    assert info["partitionKeys"][0] <= first.isoformat()
    # the archive (received today) minus its lookahead, not 2025-01-01
    assert (first - datetime.fromisoformat(info["partitionKeys"][0]).date()).days <= 2
    stats = info["partitionStats"]
    assert stats["numMaterialized"] >= len(deployment.days)
    per_day = node(deployment, "classified_messages", [d.isoformat() for d in deployment.days])
    with deployment.connect() as conn:
        stored = dict(conn.execute("SELECT message_date, count(*) FROM classified_messages "
                                   "GROUP BY 1").fetchall())
    for event in per_day["latestMaterializationByPartition"]:
        meta = metadata(event["metadataEntries"])
        day = datetime.fromisoformat(event["partition"]).date()
        assert meta["dagster/row_count"] == stored[day]
        assert {"stage_opening", "stage_booking", "stage_transaction"} <= set(meta)


# --------------------------------------------------------------------------- backfill


def test_a_three_day_backfill_from_the_ui_is_one_run_and_applies_new_keywords(
        deployment: Deployment):
    dep = deployment
    with dep.connect() as conn:
        # the team drops every booking keyword; the backfill applies it to history
        kept = [k for k in load_csv(default_csv_path()) if k.stage != "booking"]
        kset = KeywordSet.build(kept, "test")
        keyword_store.save_version(conn, kset, force=True)
        conn.commit()
    days = [d.isoformat() for d in dep.days[-3:]]
    backfill_id = dep.dagster.launch_backfill(["classified_messages"], days)

    from funnel_ingest.local.processes import wait_for
    done = wait_for(lambda: (b := dep.dagster.backfill(backfill_id))["status"] not in
                    ("REQUESTED",) and b, 180, 1, "the backfill finished")
    runs = dep.dagster.runs(**{"dagster/backfill": backfill_id})
    assert len(runs) == 1, f"a {len(days)}-day backfill is one run, got {len(runs)}"
    run = succeeded(dep, runs[0]["runId"])
    assert done["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), done
    assert (run["tags"]["dagster/asset_partition_range_start"],
            run["tags"]["dagster/asset_partition_range_end"]) == (days[0], days[-1])
    with dep.connect() as conn:
        versions = {v for (v,) in conn.execute(
            "SELECT DISTINCT keyword_version FROM classified_messages "
            "WHERE message_date BETWEEN %s AND %s", (days[0], days[-1]))}
        booked = conn.execute("SELECT count(*) FROM classified_messages WHERE "
                              "'booking' = ANY(stages) AND message_date BETWEEN %s AND %s",
                              (days[0], days[-1])).fetchone()[0]
    assert versions == {kset.version}
    assert booked == 0
    assert current_funnel(dep) == rebuilt(dep)
    # each day carries its own counts
    per_day = node(dep, "classified_messages", days)["latestMaterializationByPartition"]
    assert {e["runId"] for e in per_day} == {run["runId"]}
    assert all(metadata(e["metadataEntries"])["stage_booking"] == 0 for e in per_day)


def test_funnel_backfill_from_a_shell_is_a_run_in_the_same_instance(deployment: Deployment):
    dep = deployment
    day = dep.days[-1].isoformat()
    out = subprocess.run(
        [str(Path(sys.executable).parent / "funnel"), "backfill", "--from", day, "--to", day],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, **dep.env}, timeout=240)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"{day}: ")
    runs = dep.dagster.runs(**{"funnel/trigger": "cli-backfill"})
    assert len(runs) == 1 and runs[0]["status"] == "SUCCESS", runs
    assert runs[0]["tags"]["dagster/asset_partition_range_start"] == day


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-11-31", "--to", "2026-12-01"], "'2026-11-31' is not a date"),
    (["--from", "2026-12-02", "--to", "2026-12-01"], "is before --from"),
    (["--from", "1999-01-01", "--to", "1999-01-02"], "is outside the partitions"),
])
def test_funnel_backfill_refuses_bad_dates_in_one_line(deployment: Deployment, args, message):
    out = subprocess.run([str(Path(sys.executable).parent / "funnel"), "backfill", *args],
                         capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **deployment.env}, timeout=120)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3  # usage line(s) and the message


# --------------------------------------------------------------------------- Materialize buttons


def test_materializing_each_asset_from_the_ui_succeeds(deployment: Deployment, s3_client):
    dep = deployment
    day = dep.days[-1].isoformat()
    with dep.connect() as conn:
        before = keyword_store.load_current(conn, settings=dep.settings)
    for asset, tags in (("keywords", {}), ("classified_messages", {"dagster/partition": day}),
                        ("funnel", {}), ("funnel_report_csv", {"dagster/partition": day})):
        succeeded(dep, dep.dagster.launch_run(ASSET_JOB, assets=[asset], tags=tags))
    with dep.connect() as conn:
        current = keyword_store.load_current(conn, settings=dep.settings)
    default = KeywordSet.build(load_csv(default_csv_path()), "csv")
    synced = metadata(dep.dagster.graphql(_LATEST, {"key": {"path": ["keywords"]}})[
        "assetNodeOrError"]["assetMaterializations"][0]["metadataEntries"])
    # without a sheet, the sync publishes the packaged CSV while that file is in charge; a list
    # published through the API (as the backfill test above does) stays current, and the
    # asset says why it published nothing
    if synced["published"]:
        assert current.version == default.version
    else:
        assert current.version == before.version != default.version
        assert "not published" in synced["skipped"]
    assert synced["source_of_truth_kind"] == "api"
    assert current_funnel(dep) == rebuilt(dep)
    # the funnel's metadata: a row count and its column schema
    funnel_node = node(dep, "funnel")
    schema = metadata(funnel_node["metadataEntries"])["dagster/column_schema"]
    with dep.connect() as conn:
        columns = [c for (c,) in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'funnel' "
            "ORDER BY ordinal_position")]
        leads = conn.execute("SELECT count(*) FROM funnel").fetchone()[0]
    assert sorted(c["name"] for c in schema["columns"]) == sorted(columns)
    report = node(dep, "funnel_report_csv", [day])["latestMaterializationByPartition"][0]
    meta = metadata(report["metadataEntries"])
    # the link opens for a person (presigned), and holds what the bucket holds
    key = meta["path"].split("/", 3)[3]
    body = s3_client.get_object(Bucket=dep.settings.reports_bucket, Key=key)["Body"].read()
    answer = httpx.get(meta["url"], timeout=10)
    assert answer.status_code == 200 and answer.content == body
    assert leads > 0


# --------------------------------------------------------------------------- schedules


def test_one_tick_of_every_schedule_launches_a_run_that_succeeds(deployment: Deployment):
    dep = deployment
    names = sorted(s.name for s in defs().get_repository_def().schedule_defs)
    assert names == ["daily_report_schedule", "data_checks_every_10_minutes",
                     "keywords_sync_every_15_minutes", "replay_archive_hourly",
                     "run_history_cleanup_daily"]
    launched = {}
    for name in names:
        result = dep.dagster.schedule_dry_run(name)
        assert not result["error"], (name, result["error"])
        [request] = result["runRequests"]
        tags = {t["key"]: t["value"] for t in request["tags"]}
        run_config = yaml.safe_load(request["runConfigYaml"] or "{}") or {}
        job = dep.dagster.schedule_job(name)
        launched[name] = dep.dagster.launch_run(
            job, run_config=run_config, tags={**tags, "dagster/schedule_name": name})
    for name, run_id in launched.items():
        succeeded(dep, run_id)
    # the data checks' results are visible as passed
    for asset, check in (("classified_messages", "no_duplicate_messages"),
                         ("funnel", "stage_dates_in_order"), ("funnel", "non_negative_values"),
                         ("message_stream", "stream_backlog")):
        [execution] = dep.dagster.graphql(_CHECKS, {"key": {"path": [asset]},
                                                    "name": check})["assetCheckExecutions"]
        assert execution["runId"] == launched["data_checks_every_10_minutes"]
        assert execution["status"] == "SUCCEEDED" and execution["evaluation"]["success"], \
            (check, execution)


# --------------------------------------------------------------------------- recovery


KEYS = "SELECT source, message_id, room_key FROM classified_messages"


def test_replay_job_restores_what_a_wiped_stream_lost(deployment: Deployment):
    dep = deployment
    with dep.connect() as conn:
        before = set(conn.execute(KEYS).fetchall())
        lost = conn.execute(
            "DELETE FROM classified_messages WHERE customer_key IN (SELECT DISTINCT "
            "customer_key FROM classified_messages ORDER BY customer_key LIMIT 20) "
            "RETURNING id").fetchall()
        store.rebuild(conn, dep.settings.tz, dep.settings.cycle_rules)
        conn.commit()
    r = dep.redis()
    try:
        r.flushdb()  # Redis lost everything: the stream, the dedupe marks and the room map
    finally:
        r.close()
    run_id = dep.dagster.launch_run("replay_archive_job", run_config={
        "ops": {"replay_archive": {"config": {"since_hours": 6}}}})
    succeeded(dep, run_id)
    assert lost
    dep.wait_drained()

    with dep.connect() as conn:
        assert set(conn.execute(KEYS).fetchall()) == before  # each message back, once
    assert current_funnel(dep) == rebuilt(dep)


# --------------------------------------------------------------------------- dagster CLI


@pytest.mark.parametrize("command", [
    ["asset", "materialize", "--select", "classified_messages", "--partition", "{day}"],
    ["job", "execute", "-j", "keywords_sync_job"],
    ["job", "execute", "-j", "data_checks_job"],
])
def test_dagster_commands_run_against_the_instance(deployment: Deployment, command):
    dep = deployment
    args = [a.format(day=dep.days[-1].isoformat()) for a in command]
    before = {r["runId"] for r in dep.dagster.runs()}
    out = subprocess.run([str(Path(sys.executable).parent / "dagster"), *args, "-m",
                          "funnel_dagster.definitions"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, **dep.env}, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    # the command's run (the daemon's sensors and schedules may launch theirs meanwhile)
    [run] = [r for r in dep.dagster.runs() if r["runId"] not in before
             and not {"dagster/sensor_name", "dagster/schedule_name"} & set(r["tags"])]
    assert run["status"] == "SUCCESS", run
