"""End to end through Dagster: signed webhooks -> API -> Redis stream -> message_stream_sensor ->
drain_job run (launched by a real dagster-daemon) -> the funnel row in Postgres; and the UI's
global asset lineage page, rendered by headless Chromium (Debian's `chromium`).

Everything runs on the `funnel up` stack's servers but on private state, so other tests and
engineers are not disturbed: a unique funnel database and a unique Dagster storage database
(both dropped afterwards), Redis db 11 (flushed before and after), unique S3 buckets (emptied
and deleted afterwards), DAGSTER_HOME and logs under pytest's tmp dir.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from html.parser import HTMLParser
from pathlib import Path
from time import monotonic
from typing import ClassVar

import psycopg
import pytest
import redis

from funnel_ingest.local.dagster import LocalDagster
from funnel_ingest.local.processes import log_tail, wait_for
from funnel_ingest.settings import Settings
from funnel_ingest.simulate.sender import send_all
from funnel_ingest.simulate.webhooks import Sample, indonesian_phone, whatsapp_body
from tests.private_stack import private_stack

REPO = Path(__file__).resolve().parents[2]
E2E_REDIS_DB = 11
FUNNEL_TIMEOUT = 60.0
LINEAGE_ASSETS = ("keywords", "classified_messages", "funnel", "funnel_report_csv",
                  "meta_conversions")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                  "--window-size=1920,1200")

pytestmark = pytest.mark.timeout(240)


@dataclass
class Running:
    env: dict[str, str]
    settings: Settings
    api_url: str
    dagster: LocalDagster
    state_dir: Path


@pytest.fixture(scope="module")
def running(stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Running]:
    """The API and a Postgres-backed Dagster (webserver + daemon) on private state."""
    state_dir = tmp_path_factory.mktemp("e2e")
    with private_stack(stack_env, state_dir, tag="e2e", redis_db=E2E_REDIS_DB) as st:
        yield Running(st.env, st.settings, st.api_url, st.dagster, state_dir)


# --------------------------------------------------------------------------- the funnel


def _conversation(settings: Settings) -> tuple[list[Sample], dict]:
    """A WhatsApp customer from an ad: opening, booking the next day, paying the day after."""
    import random

    rng = random.Random(uuid.uuid4().int)
    phone = indonesian_phone(rng)  # a valid mobile number (628 + operator prefix + 9 digits)
    tz = settings.tz
    today = datetime.now(tz).date()
    at = [datetime.combine(today - timedelta(days=d), time(h), tz)
          for d, h in ((3, 10), (2, 11), (1, 9))]
    texts = ["Halo kak, saya mau info promo dari iklan",
             "Oke kak saya mau booking untuk 2 orang",
             "sudah transfer Rp 1.500.000 ya kak"]
    samples = [Sample("whatsapp", whatsapp_body(rng, phone, [text], when, referral=(n == 0)), 1)
               for n, (text, when) in enumerate(zip(texts, at))]
    expected = {"channel": "ads", "phone": f"+{phone}", "leads_date": at[0].date(),
                "booking_date": at[1].date(), "transaction_date": at[2].date(),
                "transaction_value": 1_500_000}
    return samples, expected


_RUNS_QUERY = """
query DrainRuns {
  runsOrError(filter: {pipelineName: "drain_job"}) {
    __typename
    ... on Runs { results { runId status tags { key value } } }
  }
}
"""


def _drain_runs(dagster: LocalDagster) -> list[dict]:
    data = dagster.graphql(_RUNS_QUERY)["runsOrError"]
    return data.get("results", []) if data["__typename"] == "Runs" else []


def test_webhooks_reach_the_funnel_through_the_sensor(running: Running) -> None:
    settings = running.settings
    samples, expected = _conversation(settings)
    sent_at = monotonic()
    report = asyncio.run(send_all(running.api_url, samples, running.env, concurrency=1))
    assert report.statuses == {200: len(samples)}, report.statuses
    assert report.messages == len(samples)

    def funnel_row() -> dict | None:
        with psycopg.connect(settings.database_url) as conn:
            conn.row_factory = psycopg.rows.dict_row
            row = conn.execute(
                "SELECT channel, phone, leads_date, booking_date, transaction_date, "
                "transaction_value FROM funnel WHERE phone = %s", (expected["phone"],)).fetchone()
        return row if row and row["transaction_value"] is not None else None

    try:
        row = wait_for(funnel_row, FUNNEL_TIMEOUT, 0.5, "the funnel row with the transaction")
    except TimeoutError as exc:
        runs = _drain_runs(running.dagster)
        pytest.fail(f"{exc}\ndrain_job runs: {[(x['runId'], x['status']) for x in runs]}\n"
                    f"daemon log:\n{log_tail(running.dagster.daemon_log, 60)}")
    print(f"\nwebhooks -> funnel row through the sensor in {monotonic() - sent_at:.1f} s")
    assert {**row, "transaction_value": int(row["transaction_value"])} == expected

    # it came through the sensor and a drain_job run (not some in-process drain); the row is
    # committed before the run reports its success
    sensor_tag = {"key": "dagster/sensor_name", "value": "message_stream_sensor"}

    def sensor_run_succeeded() -> list[dict] | None:
        runs = _drain_runs(running.dagster)
        done = any(x["status"] == "SUCCESS" and sensor_tag in x["tags"] for x in runs)
        return runs if done else None

    try:
        runs = wait_for(sensor_run_succeeded, 30, 0.5, "a successful drain_job run")
    except TimeoutError as exc:
        pytest.fail(f"{exc}: {_drain_runs(running.dagster)}")
    assert all(x["status"] not in ("FAILURE", "CANCELED") for x in runs), runs
    # the run trims the stream once its transaction committed
    r = redis.Redis.from_url(settings.redis_url)
    try:
        assert wait_for(lambda: r.xlen(settings.stream_key(0)) == 0, 15, 0.5,
                        "the stream trimmed after the run")
    finally:
        r.close()


# --------------------------------------------------------------------------- the lineage page


def _chromium() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_BIN"), shutil.which("chromium"),
                      shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _chromium_or_install() -> str:
    found = _chromium()
    if found:
        return found
    script = REPO / ".ci" / "install-debian"
    try:
        proc = subprocess.run([str(script)], capture_output=True, text=True, timeout=600,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"chromium is not installed and {script} could not run: {exc}")
    found = _chromium()
    if not found:
        pytest.skip(f"chromium is not installed and {script} failed ({proc.returncode}): "
                    f"{proc.stderr.strip()[-500:]}")
    return found


def _run_chromium(binary: str, args: list[str], profile: Path, timeout: float = 90) -> bytes:
    """Run headless Chromium with a fresh profile; its stdout. Killed (its whole process
    group) when it outlives `timeout`."""
    proc = subprocess.Popen([binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise AssertionError(f"chromium did not finish in {timeout:.0f} s: {args}") from None
    assert proc.returncode == 0, f"chromium exited {proc.returncode}: {err.decode()[-2000:]}"
    return out


class _AssetNames(HTMLParser):
    """Names shown in the asset graph's nodes: text and tooltips inside Dagster's
    `AssetNode_assetName*` elements (full nodes carry the full name as a tooltip; zoomed-out
    "minimal" nodes only the text, which may be shortened with an ellipsis)."""

    VOID: ClassVar[frozenset[str]] = frozenset({
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[bool] = []
        self.names: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        inside = (bool(self.stack) and self.stack[-1]) or \
            "AssetNode_assetName" in (a.get("class") or "")
        if inside and a.get("data-tooltip"):
            self.names.add(a["data-tooltip"].strip())
        if tag not in self.VOID:
            self.stack.append(inside)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID:
            self.stack.pop()

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID and self.stack:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.stack and self.stack[-1] and data.strip():
            self.names.add(data.strip())


def _asset_names(dom: str) -> set[str]:
    parser = _AssetNames()
    parser.feed(dom)
    return parser.names


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    return struct.unpack(">II", data[16:24])


def test_lineage_page_shows_the_assets(running: Running) -> None:
    chromium = _chromium_or_install()
    dagster = running.dagster
    url = dagster.lineage_url()
    shots = running.state_dir / "browser"
    shots.mkdir(exist_ok=True)

    # the React app renders after its GraphQL answers: let it run on virtual time; retry
    # with a longer budget when the first load was slow (cold webserver)
    names: set[str] = set()
    for attempt, budget in enumerate((15_000, 30_000, 60_000)):
        dom = _run_chromium(chromium, [f"--virtual-time-budget={budget}", "--dump-dom", url],
                            shots / f"profile-dom-{attempt}").decode(errors="replace")
        names = _asset_names(dom)
        if set(LINEAGE_ASSETS) <= names:
            break
    (shots / "lineage.html").write_text(dom)
    assert set(LINEAGE_ASSETS) <= names, \
        f"lineage page {url} shows {sorted(names)}; DOM in {shots / 'lineage.html'}"
    assert "Global asset lineage" in dom

    png = shots / "lineage.png"
    _run_chromium(chromium, ["--virtual-time-budget=30000", f"--screenshot={png}", url],
                  shots / "profile-shot")
    data = png.read_bytes()
    width, height = _png_size(data)
    assert (width, height) == (1920, 1200)
    assert len(data) > 30_000, f"{png} is only {len(data)} bytes: a blank page?"
    print(f"\nlineage screenshot: {png} ({len(data)} bytes) of {url}")
    if os.environ.get("FUNNEL_E2E_ARTIFACTS"):  # e.g. CI: keep it as a build artifact
        target = Path(os.environ["FUNNEL_E2E_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(png, target / "lineage.png")
        print(f"copied to {target / 'lineage.png'}")

    # the UI's API lists exactly these as materializable assets (the page's data)
    nodes = dagster.graphql("{ assetNodes { assetKey { path } isMaterializable } }")["assetNodes"]
    assert {"/".join(n["assetKey"]["path"]) for n in nodes if n["isMaterializable"]} \
        == set(LINEAGE_ASSETS)
