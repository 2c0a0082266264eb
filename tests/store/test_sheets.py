"""Reading the keyword sheet: gspread and google-auth on their real code paths, with only the
HTTP transport faked (`responses`) by recorded Google responses in tests/payloads/sheets/.

The fake token endpoint checks the service account's signed JWT (RS256, against the public half
of a throwaway key), and the Sheets endpoints require the bearer token it issued."""

from __future__ import annotations

import base64
import json
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
import redis
import requests
import responses
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from responses import matchers

from funnel_ingest.engine.keywords import (
    EmptyKeywordSetError,
    KeywordSet,
    KeywordSetError,
    default_csv_path,
    parse_rows,
)
from funnel_ingest.engine.model import Keyword
from funnel_ingest.store import keywords as keyword_store
from funnel_ingest.store.sheets import KeywordSourceError, SheetError, fetch_rows

PAYLOADS = Path(__file__).resolve().parent.parent / "payloads" / "sheets"
KEY = "1FunnelKeywordsTestSheet0000000000000000000"
SHEETS_URL = "https://sheets.googleapis.com/v4/spreadsheets"
TOKEN_URL = "https://oauth2.googleapis.com/token"
CLIENT_EMAIL = "funnel-sync@funnel-test.iam.gserviceaccount.com"


def recorded(name: str) -> dict:
    return json.loads((PAYLOADS / name).read_text())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sa_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    """A service account key file as Google issues it, with a throwaway key."""
    pem = rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account",
        "project_id": "funnel-test",
        "private_key_id": "0123456789abcdef0123456789abcdef01234567",
        "private_key": pem,
        "client_email": CLIENT_EMAIL,
        "client_id": "100000000000000000001",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": TOKEN_URL,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/x",
        "universe_domain": "googleapis.com",
    }))
    return path


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FakeGoogle:
    """Google's token endpoint and the Sheets API v4, answering with recorded payloads."""

    def __init__(self, rsps: responses.RequestsMock, public_key) -> None:
        self.rsps = rsps
        self.public_key = public_key
        self.token = recorded("token.json")["access_token"]
        self.assertions: list[dict] = []

    def _token(self, request):
        body = request.body.decode() if isinstance(request.body, bytes) else request.body
        form = dict(urllib.parse.parse_qsl(body))
        assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
        header, claims, signature = form["assertion"].split(".")
        self.public_key.verify(_b64(signature), f"{header}.{claims}".encode(),
                               padding.PKCS1v15(), hashes.SHA256())  # raises if forged
        self.assertions.append(json.loads(_b64(claims)))
        return 200, {"Content-Type": "application/json"}, json.dumps(recorded("token.json"))

    def token_ok(self) -> None:
        self.rsps.add_callback(responses.POST, TOKEN_URL, callback=self._token)

    def token_refused(self) -> None:
        self.rsps.add(responses.POST, TOKEN_URL, status=400, json=recorded("token_invalid_grant.json"))

    def _auth(self) -> list:
        expected = f"Bearer {self.token}"

        def bearer(request) -> tuple[bool, str]:
            got = request.headers.get("Authorization")  # case-insensitive lookup
            return got == expected, f"Authorization {got!r} is not {expected!r}"

        return [bearer]

    def spreadsheet(self, status: int = 200, payload: str = "spreadsheet.json") -> None:
        self.rsps.add(responses.GET, f"{SHEETS_URL}/{KEY}", status=status, json=recorded(payload),
                      match=[*self._auth(),
                             matchers.query_param_matcher({"includeGridData": "false"})])

    def values(self, title: str, payload: str) -> None:
        rng = urllib.parse.quote(f"'{title}'", safe="")
        self.rsps.add(responses.GET, f"{SHEETS_URL}/{KEY}/values/{rng}", json=recorded(payload),
                      match=self._auth())

    def sheet(self, title: str, payload: str) -> None:
        """A readable sheet: token, metadata, one worksheet's values."""
        self.token_ok()
        self.spreadsheet()
        self.values(title, payload)

    def calls_to(self, prefix: str) -> int:
        return sum(1 for c in self.rsps.calls if c.request.url.startswith(prefix))


@pytest.fixture
def google(rsa_key):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        yield FakeGoogle(rsps, rsa_key.public_key())


# --- fetch_rows ------------------------------------------------------------------------------

def test_first_worksheet_in_the_stage_keyword_layout(google, sa_file):
    google.sheet("Keywords", "values_keywords.json")
    rows = fetch_rows(KEY, str(sa_file), None)
    assert rows[0] == ["Stage", "Keyword", "Channel", "Active"]
    assert rows[3] == ["opening", "halo", "", ""]  # short rows padded by gspread
    assert parse_rows(rows) == [
        Keyword("opening", "Halo, saya lihat iklan di Instagram", "ads", True),
        Keyword("opening", "Mau info promo", "campaign_blast", True),
        Keyword("opening", "halo", None, True),
        Keyword("booking", "reservasi", None, True),
        Keyword("booking", "jadwalkan", None, False),
        Keyword("transaction", "sudah transfer", None, True),
        Keyword("transaction", "lunas", None, True),
    ]
    # the real JWT flow ran: read-only scopes, issued by the service account
    (claims,) = google.assertions
    assert claims["iss"] == CLIENT_EMAIL and claims["aud"] == TOKEN_URL
    assert "https://www.googleapis.com/auth/spreadsheets.readonly" in claims["scope"].split()


def test_named_worksheet_in_the_original_layout(google, sa_file):
    google.sheet("Original", "values_original.json")
    rows = fetch_rows(KEY, str(sa_file), "Original")
    kws = parse_rows(rows)
    assert {(k.stage, k.keyword) for k in kws} == {
        ("opening", "halo"), ("opening", "hai"), ("booking", "booking"),
        ("booking", "reservasi"), ("booking", "book"), ("transaction", "sudah transfer"),
        ("transaction", "sudah bayar")}
    assert google.calls_to(f"{SHEETS_URL}/{KEY}/values/%27Keywords%27") == 0


def test_unknown_worksheet(google, sa_file):
    google.token_ok()
    google.spreadsheet()
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), "Keywordz")
    assert info.value.reason == "worksheet_not_found"
    assert "Keywordz" in str(info.value)


def test_auth_failure_invalid_grant(google, sa_file):
    google.token_refused()
    google.spreadsheet()
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), None)
    assert info.value.reason == "auth_failed"
    assert "invalid_grant" in str(info.value)
    assert google.calls_to(SHEETS_URL) == 0


def test_sheet_not_found(google, sa_file):
    google.token_ok()
    google.spreadsheet(status=404, payload="error_404.json")
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), None)
    assert info.value.reason == "not_found"
    assert KEY in str(info.value) and "share the sheet" in str(info.value)


def test_sheet_not_shared_with_the_service_account(google, sa_file):
    google.token_ok()
    google.spreadsheet(status=403, payload="error_403.json")
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), None)
    assert info.value.reason == "permission_denied"


def test_empty_worksheet(google, sa_file):
    google.sheet("Empty", "values_empty.json")
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), "Empty")
    assert info.value.reason == "empty"


def test_google_unreachable(google, sa_file):
    google.rsps.add(responses.POST, TOKEN_URL,
                    body=requests.exceptions.ConnectionError("no route to host"))
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(sa_file), None)
    assert info.value.reason == "unavailable"


@pytest.mark.parametrize("content", [None, "not json", json.dumps({"type": "service_account"})])
def test_bad_service_account_file(tmp_path, content):
    path = tmp_path / "sa.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SheetError) as info:
        fetch_rows(KEY, str(path), None)
    assert info.value.reason == "bad_credentials"


def test_not_configured():
    with pytest.raises(SheetError) as info:
        fetch_rows("", "/etc/sa.json", None)
    assert info.value.reason == "not_configured"


# --- sync from the sheet ---------------------------------------------------------------------

def _current(conn) -> str | None:
    return keyword_store.current_version_id(conn)


def test_sync_reads_the_sheet_and_failures_keep_the_previous_version(
        settings, r, kw_db, google, sa_file):
    cfg = settings.replace(gsheet_key=KEY, google_service_account_file=str(sa_file),
                           gsheet_worksheet="")
    google.sheet("Keywords", "values_keywords.json")
    good = keyword_store.sync(cfg)  # auto: GSHEET_KEY is set
    assert good.changed and good.source == f"sheet:{KEY}" and good.row_count == 7
    assert _current(kw_db) == good.version
    assert r.smembers("keywords:booking") == {b"reservasi"}  # jadwalkan is inactive
    assert r.get("keywords:version").decode() == good.version

    def still_good() -> None:
        assert _current(kw_db) == good.version
        assert r.get("keywords:version").decode() == good.version
        assert r.smembers("keywords:transaction") == {b"sudah transfer", b"lunas"}

    # an empty worksheet
    google.rsps.reset()
    google.sheet("Empty", "values_empty.json")
    with pytest.raises(SheetError, match="empty"):
        keyword_store.sync(cfg.replace(gsheet_worksheet="Empty"))
    still_good()

    # Google refuses the key
    google.rsps.reset()
    google.token_refused()
    with pytest.raises(SheetError) as info:
        keyword_store.sync(cfg)
    assert info.value.reason == "auth_failed"
    still_good()

    # the spreadsheet is gone
    google.rsps.reset()
    google.token_ok()
    google.spreadsheet(status=404, payload="error_404.json")
    with pytest.raises(SheetError) as info:
        keyword_store.sync(cfg)
    assert info.value.reason == "not_found"
    still_good()

    # the sheet has bad rows: all reported by sheet row number, nothing published
    google.rsps.reset()
    google.sheet("Keywords", "values_bad_rows.json")
    with pytest.raises(KeywordSetError) as bad:
        keyword_store.sync(cfg)
    assert [e.row for e in bad.value.errors] == [3, 4, 5]
    still_good()

    # a named worksheet in the original layout becomes the next version
    google.rsps.reset()
    google.sheet("Original", "values_original.json")
    other = keyword_store.sync(cfg.replace(gsheet_worksheet="Original"))
    assert other.changed and other.version != good.version
    assert other.source == f"sheet:{KEY}/Original"
    assert _current(kw_db) == other.version
    assert r.smembers("keywords:booking") == {b"booking", b"reservasi", b"book"}
    # same content again: unchanged
    google.rsps.reset()
    google.sheet("Original", "values_original.json")
    again = keyword_store.sync(cfg.replace(gsheet_worksheet="Original"))
    assert again.version == other.version and not again.changed


def test_sync_source_sheet_without_a_key_is_refused(settings, kw_db):
    with pytest.raises(SheetError) as info:
        keyword_store.sync(settings.replace(gsheet_key=""), source="sheet")
    assert info.value.reason == "not_configured"
    assert _current(kw_db) is None


# --- the store: load_current, the Redis cache, concurrent publishers --------------------------

def test_empty_csv_is_refused_and_keeps_the_previous_version(settings, r, kw_db, tmp_path):
    good = keyword_store.sync(settings, source="csv", csv_path=default_csv_path())
    empty = tmp_path / "empty.csv"
    empty.write_text("stage,keyword,channel,active\n,,,\n")
    with pytest.raises(EmptyKeywordSetError, match="holds no keywords"):
        keyword_store.sync(settings, csv_path=empty)
    missing = tmp_path / "missing.csv"
    with pytest.raises(KeywordSourceError) as info:
        keyword_store.sync(settings, csv_path=missing)
    assert info.value.reason == "csv_unreadable"
    assert _current(kw_db) == good.version
    assert r.get("keywords:version").decode() == good.version


def test_load_current_seeds_from_the_configured_source_then_uses_the_cache(
        settings, r, kw_db, tmp_path):
    csv = tmp_path / "kw.csv"
    csv.write_text("opening,booking,transaction\nhalo,booking,lunas\n")
    cfg = settings.replace(keywords_csv=str(csv), gsheet_key="")
    seeded = keyword_store.load_current(kw_db, r, settings=cfg)
    assert seeded.source == f"csv:{csv}"
    assert [k.keyword for k in seeded.keywords] == ["halo", "booking", "lunas"]
    assert _current(kw_db) == seeded.version
    assert r.smembers("keywords:opening") == {b"halo"}

    # versions match: served from Redis (marked here to tell the two apart)
    entries = json.loads(r.get("keywords:entries"))
    r.set("keywords:entries", json.dumps({**entries, "source": "from-redis"}))
    assert keyword_store.load_current(kw_db, r).source == "from-redis"

    # a stale cache (another version): Postgres wins and the cache is refreshed
    r.set("keywords:entries", json.dumps({**entries, "version": "0" * 16}))
    r.sadd("keywords:opening", "stale")
    got = keyword_store.load_current(kw_db, r)
    assert got.version == seeded.version and got.source == f"csv:{csv}"
    assert r.smembers("keywords:opening") == {b"halo"}
    assert json.loads(r.get("keywords:entries"))["version"] == seeded.version

    # no Redis at all, or an unreadable cache: Postgres
    assert keyword_store.load_current(kw_db).version == seeded.version
    r.set("keywords:entries", "{not json")
    assert keyword_store.load_current(kw_db, r).version == seeded.version


def test_load_current_when_the_source_is_empty_raises(settings, r, kw_db, tmp_path):
    csv = tmp_path / "kw.csv"
    csv.write_text("opening,booking,transaction\n")
    with pytest.raises(EmptyKeywordSetError):
        keyword_store.load_current(kw_db, r, settings=settings.replace(keywords_csv=str(csv)))
    assert _current(kw_db) is None


def test_concurrent_publishers_leave_exactly_one_current_version(settings, kw_db):
    sets = [KeywordSet.build([Keyword("booking", f"book{i}")], f"test:{i}") for i in range(8)]

    def publish(kset: KeywordSet) -> bool:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            return keyword_store.save_version(conn, kset)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(publish, sets * 3))
    rows = kw_db.execute("SELECT version FROM keyword_versions WHERE current").fetchall()
    assert len(rows) == 1 and rows[0][0] in {s.version for s in sets}
    assert kw_db.execute("SELECT count(*) FROM keyword_versions").fetchone()[0] == 8
    assert kw_db.execute("SELECT count(*) FROM keyword_entries").fetchone()[0] == 8
    with pytest.raises(psycopg.errors.UniqueViolation):
        kw_db.execute("UPDATE keyword_versions SET current = true")


def test_save_version_refuses_an_empty_set(kw_db):
    with pytest.raises(EmptyKeywordSetError):
        keyword_store.save_version(kw_db, KeywordSet.build([], "test"))
    assert _current(kw_db) is None


def test_publish_with_redis_down_keeps_postgres_as_the_truth_and_says_so(settings, kw_db):
    res = keyword_store.sync(settings.replace(redis_url="redis://127.0.0.1:1/0"), source="csv")
    assert res.changed and res.cached is False
    assert any(w.startswith("Redis cache not updated") for w in res.warnings)
    assert _current(kw_db) == res.version


def test_a_publisher_that_lost_the_race_rewrites_the_cache_with_the_winner(settings, r, kw_db):
    """A commits, B commits and caches, then A writes Redis late: A must not leave its set there."""
    a = KeywordSet.build([Keyword("booking", "book-a")], "test:a")
    b = KeywordSet.build([Keyword("booking", "book-b")], "test:b")

    class LateRedis(redis.Redis):
        raced = False

        def pipeline(self, *args, **kwargs):
            if not LateRedis.raced:  # B publishes between A's commit and A's cache write
                LateRedis.raced = True
                keyword_store.publish(settings, b)
            return super().pipeline(*args, **kwargs)

    late = LateRedis.from_url(settings.redis_url)
    result = keyword_store.publish(settings, a, redis_client=late)
    assert result.version == a.version and result.changed
    assert _current(kw_db) == b.version
    assert r.get("keywords:version").decode() == b.version
    assert r.smembers("keywords:booking") == {b"book-b"}
