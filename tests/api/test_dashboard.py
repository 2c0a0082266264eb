"""GET /dashboard in a real browser: headless Chromium loads the page from the API, the page
fetches the report with the key from its URL fragment and draws the charts with the vendored
Chart.js; the test reads the rendered DOM and a screenshot."""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, sync_playwright

from funnel_ingest.api.dashboard import STATIC_DIR
from tests.support import DAY, hand_computed_rows, insert, insert_many, lead

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHART_JS_SHA256 = "87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
needs_browser = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed (.ci/install-debian)")


def chromium(tmp_path: Path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.iterdir()))}"
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", "--window-size=1400,1250",
         "--hide-scrollbars", "--virtual-time-budget=20000", *args, url],
        capture_output=True, text=True, timeout=120)


def dump_dom(tmp_path: Path, url: str) -> str:
    out = chromium(tmp_path, url, "--dump-dom")
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """Width, height and rows of RGB(A) pixels of an 8-bit, non-interlaced PNG."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert depth == 8 and colour in (2, 6)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r[i:i + 3]) for r in rows for i in range(0, stride, bpp)]


def canvas(dom: str, chart: str) -> dict[str, str]:
    tag = re.search(rf'<canvas id="{chart}"[^>]*>', dom)
    assert tag, f"no canvas {chart}"
    return dict(re.findall(r'([\w-]+)="([^"]*)"', tag.group(0)))


def step_row(dom: str, channel: str) -> list[str]:
    return summary_row(dom, channel, table="steps")


def summary_row(dom: str, channel: str, table: str = "summary") -> list[str]:
    found = re.search(rf'<table id="{table}".*?</table>', dom, re.DOTALL)
    assert found, f"no table {table}"
    row = re.search(rf'<tr[^>]*data-channel="{re.escape(channel)}"[^>]*>(.*?)</tr>',
                    found.group(0), re.DOTALL)
    assert row, f"no {table} row for {channel}"
    return [html.unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]


@pytest.fixture
def dashboard_data(funnel_db):  # noqa: F811
    rows = hand_computed_rows()
    for d in range(1, 7):  # a week of leads, so the charts over time have lines
        day = DAY + timedelta(days=d)
        rows += [lead("ads", day, book=60, pay=600 * d, value=250_000 * d),
                 lead("ads", day, book=30), lead("website", day, book=90, pay=900, value=90_000),
                 lead("direct", day)]
    insert(funnel_db, rows)


@needs_browser
def test_dashboard_renders_the_charts_from_the_report(api, dashboard_data, key, tmp_path):  # noqa: F811
    url = (f"{api.base_url}/dashboard?start=2025-10-01&end=2025-10-07"
           f"#key={key['X-API-Key']}")
    dom = dump_dom(tmp_path, url)
    assert 'data-state="ready"' in dom, dom[-3000:]

    bars = canvas(dom, "chart-channels")
    assert bars["data-series"] == "3" and bars["data-points"] == "9"  # 3 steps x 3 channels
    days, leads = canvas(dom, "chart-days"), canvas(dom, "chart-leads")
    assert days["data-series"] == leads["data-series"] == "3"
    assert int(leads["data-points"]) == 3 + 3 * 6  # day 1: 3 channels, then 3 a day
    for c in (bars, days, leads):
        assert int(c["data-painted"]) > 5_000  # pixels the chart actually drew

    # the data labels: the table under the charts and the charts' text alternatives
    ads = summary_row(dom, "ads")
    assert ads[:7] == ["ads", "17", "16", "9", "94.1%", "56.3%", "52.9%"]
    total = summary_row(dom, "All channels")
    assert total[1] == "32"
    assert re.search(r"<td>ads</td><td>94\.1%</td><td>56\.3%</td><td>52\.9%</td>", dom)
    assert re.search(r"<td>2025-10-07</td><td>website</td><td>1</td><td>100\.0%</td>", dom)
    assert 'value="ads"' in dom and 'value="website"' in dom  # channel picker filled in

    # the step funnel: counts, drop-off and conversion of each step, per channel and overall
    steps = canvas(dom, "chart-steps")
    assert steps["data-series"] == "3" and steps["data-points"] == "12"  # 3 counts x (3 + all)
    assert int(steps["data-painted"]) > 5_000
    assert step_row(dom, "ads") == ["ads", "17", "16", "1 (5.9%)", "94.1%", "9", "7 (43.8%)",
                                    "56.3%", "52.9%"]
    assert step_row(dom, "All channels")[1] == "32"
    assert 'data-young="0"' in dom  # lead dates of 2025: every conversion is final

    # time to convert: each bucket's share of the leads that reached the stage
    durations = canvas(dom, "chart-durations")
    assert durations["data-series"] == "2" and int(durations["data-painted"]) > 5_000
    found = api.client.get("/funnel-report/durations", headers=key, params={
        "start": "2025-10-01", "end": "2025-10-07"}).json()
    booked = sum(found["lead_to_booking"])
    assert booked == 5 + 3 * 6   # observed bookings: 5 hand-computed rows, 3 a day for 6 days
    first = found["lead_to_booking"][0]
    assert re.search(rf"<td>Lead → booking</td><td>&lt; 5m</td><td>{first}</td>"
                     rf"<td>{100 * first / booked:.1f}%</td>", dom)
    assert re.search(r"<td>Lead → transaction</td><td>≥ 30d</td><td>\d+</td><td>[\d.]+%</td>"
                     r"<td>100\.0%</td>", dom)

    shot = tmp_path / "dashboard.png"
    out = chromium(tmp_path, url, f"--screenshot={shot}")
    assert out.returncode == 0 and shot.exists(), out.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1400, 1250)
    colours = set(pixels)
    assert len(colours) > 200  # text, bars, lines, anti-aliasing: not a blank page
    bar_blue = {p for p in colours if p[2] > 180 and p[0] < 60 and p[1] < 100}
    assert bar_blue, "no blue bars in the screenshot"


def business_today(tz: str) -> set[date]:
    """Today in `tz`, as the API computes it (both dates, should midnight pass meanwhile)."""
    return {datetime.now(ZoneInfo(tz)).date(), (datetime.now(UTC) + timedelta(minutes=1))
            .astimezone(ZoneInfo(tz)).date()}


def test_dashboard_settings_give_todays_business_date_not_the_utc_date(api):
    resp = api.client.get("/dashboard/settings")
    assert resp.status_code == 200
    body = resp.json()
    assert body["timezone"] == "Asia/Jakarta"
    assert date.fromisoformat(body["today"]) in business_today("Asia/Jakarta")


@needs_browser
def test_dashboard_defaults_to_the_last_30_business_days_and_flags_young_cohorts(
        api, funnel_db, key, tmp_path):
    """With no dates in the URL the range ends today in FUNNEL_TIMEZONE. Leads pay 4 days
    after their lead here (p90 4 days): the cohorts of the last 4 days are not final yet, so
    they are marked, drawn hollow and dashed, not read as a drop; per week, the same."""
    today = max(business_today("Asia/Jakarta"))
    rows = []
    for back in range(0, 12):
        day = today - timedelta(days=back)
        paid = back >= 4  # a young cohort has not paid yet
        rows += [lead("ads", day, book=3600, pay=4 * 86400 if paid else None,
                      value=100_000 if paid else None), lead("website", day)]
    insert(funnel_db, rows)
    dom = dump_dom(tmp_path, f"{api.base_url}/dashboard#key={key['X-API-Key']}")
    assert 'data-state="ready"' in dom, dom[-3000:]
    start = today - timedelta(days=29)
    assert f"lead dates {start.isoformat()} to {today.isoformat()} (Asia/Jakarta" in dom
    # p90 lead -> transaction = 4 days: lead dates after today - 4 days are young
    young = int(canvas(dom, "chart-days")["data-young"])
    assert young == 2 * 4  # 4 lead dates x 2 channels
    assert f"Lead dates after {(today - timedelta(days=4)).isoformat()}" in dom
    assert re.search(rf"<td>{today.isoformat()}</td><td>ads</td><td>1</td><td>0\.0%</td>"
                     r"<td>not final</td>", dom)
    final_day = today - timedelta(days=6)
    assert re.search(rf"<td>{final_day.isoformat()}</td><td>ads</td><td>1</td>"
                     r"<td>100\.0%</td><td>final</td>", dom)

    weekly = dump_dom(tmp_path, f"{api.base_url}/dashboard?per=week#key={key['X-API-Key']}")
    assert 'data-state="ready"' in weekly
    monday = today - timedelta(days=today.weekday())
    assert re.search(rf"<td>{monday.isoformat()}</td><td>ads</td><td>{today.weekday() + 1}"
                     r"</td><td>[0-9.]+%</td><td>not final</td>", weekly)
    assert "week of" in weekly


CHARTS = ("chart-steps", "chart-channels", "chart-days", "chart-durations", "chart-leads")


@contextmanager
def ready_page(url: str, width: int = 1400, height: int = 900, mobile: bool = False
               ) -> Iterator[Page]:
    """The dashboard at `url` in the system's Chromium (driven by Playwright), once drawn."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height},
                                    is_mobile=mobile, device_scale_factor=1,
                                    accept_downloads=True)
            page.goto(url)
            page.wait_for_selector("body[data-state=ready]", timeout=20_000)
            yield page
        finally:
            browser.close()


@needs_browser
@pytest.mark.parametrize("width,height,mobile", [(390, 844, True), (1400, 900, False)],
                         ids=["phone", "desktop"])
def test_dashboard_fits_a_phone_and_a_desktop_and_draws_every_chart(
        api, dashboard_data, key, tmp_path, width, height, mobile):
    """At a phone's width (390 CSS px, mobile viewport) and a desktop's, nothing makes the page
    scroll sideways, every chart lies inside the viewport and paints, and the step funnel's bars
    are in the screenshot (its wide table scrolls inside its own panel)."""
    url = f"{api.base_url}/dashboard?start=2025-10-01&end=2025-10-07#key={key['X-API-Key']}"
    with ready_page(url, width, height, mobile) as page:
        inner, scroll = page.evaluate("[innerWidth, document.documentElement.scrollWidth]")
        assert inner == width and scroll <= width
        for chart in CHARTS:
            canvas = page.locator(f"#{chart}")
            box = canvas.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width
            assert box["width"] > 250 and box["height"] == 300
            assert int(canvas.get_attribute("data-painted")) > 2_000
        shot = tmp_path / f"steps-{width}.png"
        page.locator("#chart-steps").screenshot(path=str(shot))
    _w, _h, pixels = png_pixels(shot)
    assert any(p[2] > 180 and p[0] < 60 and p[1] < 100 for p in pixels)  # the dark blue bars


@needs_browser
def test_dashboard_compares_with_the_period_before_and_lists_the_leads_on_screen(
        api, funnel_db, key, tmp_path):
    """The totals carry their change against the previous period of the same length; under the
    charts the selected leads page by page in report order (Next, Previous); the CSV download
    is the report of the filters applied, byte for byte, even after the form was edited."""
    insert_many(funnel_db, 120, DAY, 30)            # 4 leads a day
    insert(funnel_db, [lead("ads", DAY + timedelta(days=20), minute=m) for m in range(6)])
    start, end = DAY + timedelta(days=15), DAY + timedelta(days=29)
    params = {"start": start.isoformat(), "end": end.isoformat()}

    def leads(start_: date, end_: date) -> int:
        body = api.client.get("/funnel-report", headers=key, params={
            "start": start_.isoformat(), "end": end_.isoformat(), "limit": 1}).json()
        return body["summary"]["total"]["leads"]

    assert leads(start, end) == 66 and leads(DAY, DAY + timedelta(days=14)) == 60
    order = [r["lead_id"] for r in api.client.get("/funnel-report", headers=key, params={
        **params, "limit": 1000}).json()["rows"]]
    csv = api.client.get("/funnel-report", headers=key, params={**params, "format": "csv"})
    url = f"{api.base_url}/dashboard?start={start}&end={end}#key={key['X-API-Key']}"
    with ready_page(url) as page:
        tiles = page.locator("#totals .tile")
        assert tiles.nth(0).get_attribute("data-delta") == "+10.0%"   # 66 against 60
        assert "the 15 days before: 2025-10-01 to 2025-10-15" in page.inner_text("#compared")

        def shown() -> list[str]:
            return page.eval_on_selector_all("#leads tbody tr",
                                             "rows => rows.map(r => r.dataset.lead)")

        assert shown() == order[:50]
        assert page.inner_text("#leads-page") == "1\u201350 of 66"
        assert page.is_disabled("#leads-prev") and not page.is_disabled("#leads-next")
        page.click("#leads-next")
        page.wait_for_selector('#leads[data-page="1"]')
        assert shown() == order[50:]
        assert page.inner_text("#leads-page") == "51\u201366 of 66"
        assert page.is_disabled("#leads-next")
        page.click("#leads-prev")
        page.wait_for_selector('#leads[data-page="0"]')
        assert shown() == order[:50]

        page.fill("#campaign", "not-applied")     # an edit without Apply changes nothing
        with page.expect_download() as download:
            page.click("#csv")
        saved = download.value
        assert saved.suggested_filename == f"funnel_report_{start}_{end}.csv"
        body = Path(saved.path()).read_bytes()
    assert body == csv.content and body.count(b"\n") == 67   # header + 66 leads


@needs_browser
def test_dashboard_breaks_the_step_funnel_down_by_medium_and_campaign(api, funnel_db, key):
    """The step funnel's groups follow the "by" selector (or `?by=`): the values of the
    dimension with the most leads first, leads without one as "(none)", and a note counting
    the groups and leads beyond the 20 listed."""
    rows = [lead("ads", book=60, pay=120, value=100_000, campaign="spring", medium="instagram"),
            lead("ads", campaign="spring", medium="instagram"), lead("ads", book=30),
            lead("website", medium=None)]
    rows += [lead("direct", campaign=f"small-{n:02d}", minute=n) for n in range(22)]
    insert(funnel_db, rows)
    url = f"{api.base_url}/dashboard?start={DAY}&end={DAY}&by=medium#key={key['X-API-Key']}"
    with ready_page(url) as page:
        page.wait_for_selector('#steps[data-by="medium"]')
        dom = page.content()
        assert page.inner_text("#steps-by") == "Medium"
        assert step_row(dom, "whatsapp")[1:4] == ["23", "1", "22 (95.7%)"]
        assert step_row(dom, "instagram")[1:3] == ["2", "1"]
        assert step_row(dom, "(none)")[1] == "1"
        assert step_row(dom, "All leads")[1] == "26"
        assert page.is_hidden("#steps-note")

        page.select_option("#breakdown", "campaign")
        page.wait_for_selector('#steps[data-by="campaign"]')
        dom = page.content()
        names = page.eval_on_selector_all("#steps tbody tr",
                                          "rows => rows.map(r => r.dataset.channel)")
        assert names[:2] == ["spring", "(none)"] and len(names) == 21   # 20 groups + total
        assert step_row(dom, "spring")[1:6] == ["2", "1", "1 (50.0%)", "50.0%", "1"]
        assert page.inner_text("#steps-note") == (
            "The 20 campaigns with the most leads; 4 more hold 4 leads.")
        assert int(page.get_attribute("#chart-steps", "data-points")) == 3 * 21


@needs_browser
def test_dashboard_asks_for_the_key_and_refuses_a_wrong_one(api, dashboard_data, tmp_path):
    dom = dump_dom(tmp_path, f"{api.base_url}/dashboard")
    assert 'data-state="login"' in dom
    assert '<section id="login">' in dom  # shown (not hidden)
    assert re.search(r'<main id="content" hidden', dom)
    wrong = dump_dom(tmp_path, f"{api.base_url}/dashboard#key=not-the-key")
    assert 'data-state="login"' in wrong and "the API key was refused" in wrong


def test_dashboard_page_is_static_strict_and_self_contained(api):
    resp = api.client.get("/dashboard")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert resp.headers["referrer-policy"] == "no-referrer"
    page = resp.text
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)  # no inline code
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing from elsewhere
    for src in re.findall(r'(?:src|href)="([^"]+)"', page):
        asset = api.client.get("/" + src)
        assert asset.status_code == 200, src


def test_the_vendored_chart_library_is_served_unchanged(api):
    resp = api.client.get("/static/vendor/chart.umd.min.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/javascript")
    assert hashlib.sha256(resp.content).hexdigest() == CHART_JS_SHA256
    assert (STATIC_DIR / "vendor" / "chart.js-LICENSE.md").exists()


@pytest.mark.parametrize("path", ["/static/../report.py", "/static/%2e%2e/report.py",
                                  "/static/nothing.js", "/static/vendor", "/static/../../README.md"])
def test_static_serves_only_its_own_files(api, path):
    assert api.client.get(path).status_code == 404


@needs_browser
def test_dashboard_shows_campaign_names_marks_unknown_ids_and_filters_by_campaign(
        api, funnel_db, key):
    """The step funnel by campaign and the lead list show a campaign's name (its key in the
    tooltip); a key no payload or import named is shown as itself, marked unknown; the
    campaign filter suggests every campaign and selects its leads."""
    insert(funnel_db, [lead("campaign_blast", campaign="template:promo", minute=n,
                            lead_id=f"named-{n}") for n in range(3)]
           + [lead("campaign_blast", campaign="wamid.unknown", minute=5, lead_id="unknown"),
              lead("direct", minute=6, lead_id="none")])
    funnel_db.execute("INSERT INTO campaigns (campaign, name, kind, source) VALUES "
                      "('template:promo', 'Promo Desember', 'template', 'whatsapp')")
    funnel_db.commit()
    url = f"{api.base_url}/dashboard?start={DAY}&end={DAY}&by=campaign#key={key['X-API-Key']}"
    with ready_page(url) as page:
        page.wait_for_selector('#steps[data-by="campaign"]')
        dom = page.content()
        assert step_row(dom, "template:promo")[0] == "Promo Desember"
        assert step_row(dom, "template:promo")[1] == "3"
        unknown = page.locator('#steps tr[data-channel="wamid.unknown"] td').first
        assert unknown.inner_text() == "wamid.unknown unknown"
        assert unknown.locator("span.unknown").count() == 1
        assert step_row(dom, "(none)")[0] == "(none)"

        def campaign_cell(lead_id: str) -> str:
            return page.locator(f'#leads tr[data-lead="{lead_id}"] td').nth(6).inner_text()

        assert campaign_cell("named-0") == "Promo Desember"
        assert page.get_attribute('#leads tr[data-lead="named-0"] td:nth-child(7)',
                                  "title") == "template:promo"
        assert campaign_cell("unknown") == "wamid.unknown unknown"
        assert campaign_cell("none") == "\u2013"
        page.wait_for_selector("#campaign-list option >> nth=1", state="attached")
        options = page.eval_on_selector_all(
            "#campaign-list option", "os => os.map(o => [o.value, o.label])")
        assert options == [["template:promo", "Promo Desember"],
                           ["wamid.unknown", "wamid.unknown (unknown)"]]

        page.fill("#campaign", "template:promo")
        page.click("#filters button[type=submit]")
        page.wait_for_selector('#leads tr[data-lead="unknown"]', state="detached")
        page.wait_for_selector("body[data-state=ready]")
        assert page.inner_text("#leads-page") == "1\u20133 of 3"
        shown = page.eval_on_selector_all("#leads tbody tr", "rows => rows.map(r => "
                                          "r.dataset.lead)")
        assert sorted(shown) == ["named-0", "named-1", "named-2"]
