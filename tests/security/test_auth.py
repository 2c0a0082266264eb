"""Authentication: the data routes refuse a missing or wrong API key with 401/403 and a reason
(and do nothing); every secret comparison goes through `hmac.compare_digest`; no secret — and
no wrong credential a caller sent — ever appears in the API's logs, at DEBUG level, through good
requests, bad ones and store failures."""

from __future__ import annotations

import ast
import hashlib
import hmac as hmac_module
import inspect
import os
import secrets as secrets_module
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from funnel_ingest.ingest import auth
from funnel_ingest.local.processes import free_port
from tests.support import SECRETS, ApiServer, payload

ROOT = Path(__file__).resolve().parents[2]

DATA_ROUTES = [
    ("GET", "/keywords", None),
    ("PUT", "/keywords", [{"stage": "booking", "keyword": "booking"},
                          {"stage": "opening", "keyword": "halo"},
                          {"stage": "transaction", "keyword": "sudah transfer"}]),
    ("POST", "/keywords/sync", None),
    ("GET", "/funnel-report", None),
    ("GET", "/funnel-report?format=csv", None),
    ("GET", "/funnel-report/daily", None),
]
KEY = SECRETS["api_key"]


def call(api: ApiServer, method: str, path: str, body, headers: dict) -> httpx.Response:
    return api.client.request(method, path, json=body, headers=headers)


def current_version(api: ApiServer) -> str | None:
    res = api.client.get("/keywords", headers={"X-API-Key": KEY})
    return res.json()["version"] if res.status_code == 200 else None


@pytest.mark.parametrize("method, path, body", DATA_ROUTES,
                         ids=[f"{m} {p}" for m, p, _ in DATA_ROUTES])
def test_data_routes_refuse_missing_and_wrong_keys(method, path, body, sec_api):
    version = current_version(sec_api)
    refusals = [
        ({}, 401, "missing_api_key"),
        ({"X-API-Key": ""}, 401, "missing_api_key"),
        ({"X-API-Key": KEY[:-1]}, 403, "invalid_api_key"),
        ({"X-API-Key": KEY + "x"}, 403, "invalid_api_key"),
        ({"X-API-Key": KEY.upper()}, 403, "invalid_api_key"),
        ({"X-API-Key": "x" * 4096}, 403, "invalid_api_key"),
        ({"X-API-Key": (KEY + "\u00e9").encode("latin-1")}, 403, "invalid_api_key"),
        ({"X-API-Key": b"\xff\xfe"}, 403, "invalid_api_key"),
        ({"Authorization": f"Bearer {KEY}"}, 401, "missing_api_key"),
        ({"X-Api-Key-": KEY}, 401, "missing_api_key"),
        ({"X-Webhook-Token": SECRETS["webhook_token"]}, 401, "missing_api_key"),
    ]
    for headers, status, error in refusals:
        res = call(sec_api, method, path, body, headers)
        assert res.status_code == status, (headers, res.status_code, res.text[:200])
        assert res.json() == {"error": error, "detail": res.json()["detail"]}
        assert "X-API-Key" in res.json()["detail"]
    # the key in the query string is not a key (it would end up in access logs)
    sep = "&" if "?" in path else "?"
    for name in ("key", "api_key", "X-API-Key"):
        res = call(sec_api, method, f"{path}{sep}{name}={KEY}", body, {})
        assert res.status_code == 401, res.text
    assert current_version(sec_api) == version, "a refused request changed the keywords"
    ok = call(sec_api, method, path, body, {"X-API-Key": KEY})
    assert ok.status_code in (200, 404), ok.text[:300]     # 404: no keyword version yet


def test_data_routes_answer_503_when_no_api_key_is_configured(sec_settings):
    with ApiServer(sec_settings.replace(api_key="")) as api:
        for method, path, body in DATA_ROUTES:
            for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": KEY}):
                res = call(api, method, path, body, headers)
                assert res.status_code == 503, (path, headers, res.text)
                assert res.json()["error"] == "not_configured"


@pytest.mark.parametrize("setting", ["webhook_token", "webhook_hmac_secret",
                                     "whatsapp_app_secret", "whatsapp_verify_token"])
def test_webhooks_refuse_everything_when_their_secret_is_not_configured(setting, sec_settings):
    """An empty secret must never be a secret everybody knows."""
    blank = {"webhook_token": "", "webhook_hmac_secret": ""} if setting.startswith("webhook") \
        else {setting: ""}
    with ApiServer(sec_settings.replace(**blank)) as api:
        if setting == "whatsapp_verify_token":
            res = api.client.get("/webhooks/whatsapp", params={
                "hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "42"})
            assert res.status_code == 403 and res.text != "42"
            return
        body = payload("whatsapp_text.json" if setting == "whatsapp_app_secret"
                       else "generic_customer.json")
        path = "/webhooks/whatsapp" if setting == "whatsapp_app_secret" else "/webhook"
        for headers in ({}, {"X-Webhook-Token": ""}, {"X-Hub-Signature-256": auth.sign(body, "")},
                        {"X-Webhook-Signature": auth.sign(body, "")}):
            res = api.client.post(path, content=body, headers=headers)
            assert res.status_code in (401, 403, 503), (setting, headers, res.text)
            if res.status_code == 503:
                assert res.json()["error"] == "not_configured"


# --- constant-time comparisons -------------------------------------------------------------------

class Spy:
    """Records the arguments of every `compare_digest` call (and still compares)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, bytes]] = []
        self.real = hmac_module.compare_digest

    def __call__(self, a, b) -> bool:
        norm = [x.encode() if isinstance(x, str) else bytes(x) for x in (a, b)]
        self.calls.append((norm[0], norm[1]))
        return self.real(a, b)

    def compared(self, secret: str | bytes) -> bool:
        s = secret.encode() if isinstance(secret, str) else secret
        return any(s in pair for pair in self.calls)


@pytest.fixture
def spy(monkeypatch) -> Iterator[Spy]:
    """`compare_digest` replaced by a recording wrapper wherever our code could reach it
    (`hmac.compare_digest`, `secrets.compare_digest`, a `from hmac import compare_digest`)."""
    s = Spy()
    monkeypatch.setattr(hmac_module, "compare_digest", s)
    monkeypatch.setattr(secrets_module, "compare_digest", s)
    for name, module in list(sys.modules.items()):
        if name.startswith("funnel_ingest") and getattr(module, "compare_digest", None) is s.real:
            monkeypatch.setattr(module, "compare_digest", s)
    yield s


def _expected_sig(body: bytes, secret: str) -> bytes:
    return hmac_module.new(secret.encode(), body, hashlib.sha256).hexdigest().encode()


def test_the_crm_token_is_compared_in_constant_time(sec_api, spy):
    body = payload("generic_customer.json")
    for given in ("wrong-token-Jq3", SECRETS["webhook_token"]):
        spy.calls.clear()
        res = sec_api.crm("/webhook", body, token=given)
        assert res.status_code == (200 if given == SECRETS["webhook_token"] else 403)
        assert (given.encode(), SECRETS["webhook_token"].encode()) in spy.calls


@pytest.mark.parametrize("route", ["/webhooks/qontak", "/webhook"])
def test_the_crm_signature_is_compared_in_constant_time(route, sec_api, spy):
    body = payload("qontak_customer.json" if "qontak" in route else "generic_customer.json")
    expected = _expected_sig(body, SECRETS["webhook_hmac_secret"])
    for given in ("sha256=" + "0" * 64, "sha256=" + expected.decode().upper()):
        spy.calls.clear()
        res = sec_api.crm(route, body, token=None, signature=given)
        assert res.status_code == (403 if given.endswith("0" * 64) else 200), res.text
        assert (expected, given.removeprefix("sha256=").lower().encode()) in spy.calls


def test_the_whatsapp_signature_is_compared_in_constant_time(sec_api, spy):
    body = payload("whatsapp_text.json")
    expected = _expected_sig(body, SECRETS["whatsapp_app_secret"])
    for given in ("sha256=" + "f" * 64, "sha256=" + expected.decode()):
        spy.calls.clear()
        res = sec_api.whatsapp(body, signature=given)
        assert res.status_code == (403 if given.endswith("f" * 64) else 200), res.text
        assert (expected, given.removeprefix("sha256=").encode()) in spy.calls


def test_the_whatsapp_verify_token_is_compared_in_constant_time(sec_api, spy):
    for given in ("wrong-verify-Zp8", SECRETS["whatsapp_verify_token"]):
        spy.calls.clear()
        res = sec_api.client.get("/webhooks/whatsapp", params={
            "hub.mode": "subscribe", "hub.verify_token": given, "hub.challenge": "1158201444"})
        assert res.status_code == (200 if given == SECRETS["whatsapp_verify_token"] else 403)
        assert (given.encode(), SECRETS["whatsapp_verify_token"].encode()) in spy.calls


@pytest.mark.parametrize("path", ["/keywords", "/funnel-report", "/funnel-report/daily"])
def test_the_api_key_is_compared_in_constant_time(path, sec_api, spy):
    for given in ("wrong-key-Mv5", KEY):
        spy.calls.clear()
        res = sec_api.client.get(path, headers={"X-API-Key": given})
        assert res.status_code != 403 if given == KEY else res.status_code == 403
        assert (given.encode(), KEY.encode()) in spy.calls


SECRET_WORDS = ("token", "secret", "signature", "api_key", "expected", "digest", "password",
                "key")


def test_no_secret_is_compared_with_an_ordinary_operator():
    """Static guard for code not reached above: in the modules that handle credentials, no
    `==`, `!=`, `in` or `is` has an operand named like a credential."""
    from funnel_ingest.api import dashboard, webhooks
    from funnel_ingest.api import keywords as keywords_api
    from funnel_ingest.api import report as report_api

    offenders = []
    for module in (auth, webhooks, keywords_api, report_api, dashboard):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            names = [ast.unparse(x).lower() for x in (node.left, *node.comparators)]
            if all(isinstance(op, (ast.Is, ast.IsNot)) for op in node.ops) and \
                    names[1:] == ["none"] * len(node.ops):
                continue                                      # `token is None`
            if any(w in n for n in names for w in SECRET_WORDS):
                offenders.append(f"{module.__name__}:{node.lineno}: {ast.unparse(node)}")
    assert not offenders, offenders


# --- secrets never logged ------------------------------------------------------------------------

WRONG = {
    "token": "wrong-token-Hf7Kq2",
    "signature": "sha256=" + "ab12" * 16,
    "verify": "wrong-verify-token-Lp4Zs8",
    "api_key": "wrong-api-key-Vn3Xd6",
    "api_key_query": "wrong-query-key-Rt5Wb1",
}
DB_PASSWORD = "db-password-Ty8Gk3"
REDIS_PASSWORD = "redis-password-Mc2Nj9"


def _with_password(url: str, password: str, port: int | None = None) -> str:
    parts = urlsplit(url)
    user = parts.username or "postgres"
    netloc = f"{user}:{password}@{parts.hostname}:{port or parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _run_api(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """`uvicorn funnel_ingest.main:app` at DEBUG level, with uvicorn's access log (which
    `funnel api`, the image's command, turns off): the most a deployment could log."""
    port = free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "funnel_ingest.main:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "debug"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(log_path.read_text()[-3000:])
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the API did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _traffic(base: str, broken: bool) -> dict[str, int]:
    """Good and bad requests, sent concurrently (with the stores down each good one waits out
    its store's retries and timeouts); their statuses by label."""
    wa, qontak, generic = (payload(n) for n in ("whatsapp_text.json", "qontak_customer.json",
                                                 "generic_customer.json"))
    json_type = {"Content-Type": "application/json"}
    requests: dict[str, tuple[str, str, dict]] = {
        # good requests
        "wa": ("POST", "/webhooks/whatsapp", {"content": wa, "headers": {**json_type,
               "X-Hub-Signature-256": auth.sign(wa, SECRETS["whatsapp_app_secret"])}}),
        "qontak": ("POST", "/webhooks/qontak", {"content": qontak, "headers": {**json_type,
                   "X-Webhook-Signature": auth.sign(qontak, SECRETS["webhook_hmac_secret"])}}),
        "generic": ("POST", "/webhook", {"content": generic, "headers": {
                    **json_type, "X-Webhook-Token": SECRETS["webhook_token"]}}),
        "handshake": ("GET", "/webhooks/whatsapp", {"params": {
            "hub.mode": "subscribe", "hub.verify_token": SECRETS["whatsapp_verify_token"],
            "hub.challenge": "987654"}}),
        "put keywords": ("PUT", "/keywords", {"headers": {"X-API-Key": KEY},
                                              "json": DATA_ROUTES[1][2]}),
        **{path: ("GET", path, {"headers": {"X-API-Key": KEY}}) for path in (
            "/keywords", "/readyz", "/metrics", "/funnel-report", "/funnel-report/daily")},
        # bad requests
        "wrong token": ("POST", "/webhook", {"content": generic, "headers": {
                        **json_type, "X-Webhook-Token": WRONG["token"]}}),
        "wrong crm signature": ("POST", "/webhooks/qontak", {"content": qontak, "headers": {
                                **json_type, "X-Webhook-Signature": WRONG["signature"]}}),
        "wrong wa signature": ("POST", "/webhooks/whatsapp", {"content": wa, "headers": {
                               **json_type, "X-Hub-Signature-256": WRONG["signature"]}}),
        "malformed wa signature": ("POST", "/webhooks/whatsapp", {"content": wa, "headers": {
                                   **json_type, "X-Hub-Signature-256": WRONG["token"]}}),
        "bad json": ("POST", "/webhook", {"content": b"{not json", "headers": {
                     **json_type, "X-Webhook-Token": SECRETS["webhook_token"]}}),
        "wrong verify token": ("GET", "/webhooks/whatsapp", {"params": {
            "hub.mode": "subscribe", "hub.verify_token": WRONG["verify"],
            "hub.challenge": "987654"}}),
        "wrong api key": ("GET", "/funnel-report", {"headers": {"X-API-Key": WRONG["api_key"]}}),
        "api key in query": ("GET", "/funnel-report", {"params": {
            "key": WRONG["api_key_query"]}}),
    }
    with httpx.Client(base_url=base, timeout=60) as c, ThreadPoolExecutor(16) as pool:
        futures = {label: pool.submit(c.request, method, path, **kw)
                   for label, (method, path, kw) in requests.items()}
        return {label: f.result().status_code for label, f in futures.items()}


def test_no_secret_and_no_wrong_credential_is_ever_logged(sec_settings, tmp_path):
    env = {**os.environ, **{k.upper(): v for k, v in SECRETS.items()},
           "RAW_BUCKET": sec_settings.raw_bucket, "REPORTS_BUCKET": sec_settings.reports_bucket,
           "DATABASE_URL": _with_password(sec_settings.database_url, DB_PASSWORD),
           "REDIS_URL": sec_settings.redis_url, "LOG_LEVEL": "DEBUG",
           "S3_ENDPOINT_URL": sec_settings.s3_endpoint_url,
           "S3_ACCESS_KEY_ID": sec_settings.s3_access_key_id,
           "S3_SECRET_ACCESS_KEY": sec_settings.s3_secret_access_key.get_secret_value()}
    env.pop("DAGSTER_HOME", None)
    logs = []
    # 1. the real stores; 2. every store failing (S3, Redis and Postgres on closed ports, the
    # Redis and Postgres URLs with passwords)
    closed = free_port()
    broken = {**env, "S3_ENDPOINT_URL": f"http://127.0.0.1:{closed}",
              "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{closed}/0",
              "DATABASE_URL": _with_password(sec_settings.database_url, DB_PASSWORD, closed)}
    for name, run_env in (("working", env), ("broken", broken)):
        log_path = tmp_path / f"{name}.log"
        proc, base = _run_api(run_env, log_path)
        try:
            statuses = _traffic(base, broken=name == "broken")
        finally:
            _stop(proc)
        good = ("wa", "qontak", "generic", "handshake", "put keywords", "/keywords",
                "/funnel-report", "/funnel-report/daily", "/readyz", "/metrics")
        if name == "working":
            assert all(statuses[k] == 200 for k in good), statuses
        else:   # every store is down: the routes that need one say so
            assert all(statuses[k] == 503 for k in good if k not in ("handshake", "/metrics")), \
                statuses
        assert statuses["wrong token"] == statuses["wrong crm signature"] == 403, statuses
        assert statuses["wrong wa signature"] == statuses["wrong verify token"] == 403, statuses
        assert statuses["malformed wa signature"] == 401 and statuses["bad json"] == 400
        assert statuses["wrong api key"] == 403 and statuses["api key in query"] == 401
        logs.append(log_path.read_text(errors="replace"))
    text = "\n".join(logs)
    # the logs are real: DEBUG output, access lines, the store failures of the second run
    assert " DEBUG " in text or "DEBUG:" in text, text[:2000]
    assert '"POST /webhook HTTP/1.1" 403' in text and "/webhooks/whatsapp?" in text
    assert "unavailable" in text.lower() or "failed" in text.lower()
    leaked = {name: value for name, value in {
        **{k.upper(): v for k, v in SECRETS.items()},
        "S3_SECRET_ACCESS_KEY": sec_settings.s3_secret_access_key.get_secret_value(),
        "DB password": DB_PASSWORD, "Redis password": REDIS_PASSWORD,
        **{f"wrong {k}": v for k, v in WRONG.items()},
    }.items() if value and value in text}
    assert not leaked, {k: [ln for ln in text.splitlines() if v in ln][:3]
                        for k, v in leaked.items()}
