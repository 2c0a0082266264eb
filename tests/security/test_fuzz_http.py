"""Fuzzed requests against the live API (uvicorn over loopback): mutated provider payloads and
arbitrary bytes, correctly signed, on every webhook route; random credentials; random report
filters. Never a 5xx; every answer is a documented status with a JSON body that says why."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from funnel_ingest.ingest import auth
from tests.security.fuzzing import NASTY_STRINGS, mutated_bodies
from tests.support import RAW_KEY, SEC

ROUTES = {"whatsapp": "/webhooks/whatsapp", "qontak": "/webhooks/qontak", "generic": "/webhook"}
FEW = hsettings(SEC, max_examples=25)


def signed(api, route: str, body: bytes) -> dict[str, str]:
    s = api.settings
    if route == "whatsapp":
        return {"X-Hub-Signature-256": auth.sign(body, s.whatsapp_app_secret.get_secret_value())}
    if route == "qontak":
        return {"X-Webhook-Signature": auth.sign(body, s.webhook_hmac_secret.get_secret_value())}
    return {"X-Webhook-Token": s.webhook_token.get_secret_value()}


def check_answer(res) -> None:
    assert res.status_code in (200, 400, 413, 422), (res.status_code, res.text[:500])
    assert res.headers["content-type"].startswith("application/json")
    doc = res.json()
    if res.status_code == 200:
        assert doc["status"] == "accepted" and RAW_KEY.fullmatch(doc["raw_key"]), doc
        assert all(isinstance(doc[k], int) and doc[k] >= 0
                   for k in ("messages", "statuses", "dead_letters", "duplicates"))
    else:
        assert re.fullmatch(r"[a-z0-9_]+", doc["error"]) and doc["detail"], doc


@pytest.mark.parametrize("route", ROUTES)
@FEW
@given(data=st.data())
def test_mutated_payloads_over_http_never_get_a_5xx(route, data, sec_api):
    _, body = data.draw(mutated_bodies(route))
    res = sec_api.client.post(ROUTES[route], content=body,
                              headers={"Content-Type": "application/json",
                                       **signed(sec_api, route, body)})
    check_answer(res)


@pytest.mark.parametrize("route", ROUTES)
@hsettings(SEC, max_examples=10)
@given(body=st.binary(max_size=3000))
def test_arbitrary_bytes_over_http_never_get_a_5xx(route, body, sec_api):
    res = sec_api.client.post(ROUTES[route], content=body, headers=signed(sec_api, route, body))
    check_answer(res)
    assert res.status_code != 200 or body.strip()[:1] in (b"{", b"[")


# valid HTTP field values (RFC 9110: visible ASCII, space, obs-text bytes 0x80-0xFF), as bytes
header_text = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                   exclude_characters="\x7f"), max_size=120),
    st.sampled_from([s for s in NASTY_STRINGS if s.isprintable() and s.isascii()
                     and len(s) < 200])).map(lambda s: s.strip(" ").encode("latin-1"))


@pytest.mark.parametrize("route", ROUTES)
@FEW
@given(token=header_text, signature=st.one_of(st.none(), header_text))
def test_random_credentials_are_refused_with_401_or_403(route, token, signature, sec_api):
    body = b'{"room_id": "r", "sender": {"phone": "081234567890"}, ' \
           b'"message": {"id": "cred"}, "timestamp": 1749416383}'
    headers = {"Content-Type": "application/json"}
    if route == "whatsapp":
        headers["X-Hub-Signature-256"] = token
    else:
        headers["X-Webhook-Token"] = token
        if signature is not None:
            headers["X-Webhook-Signature"] = signature
    res = sec_api.client.post(ROUTES[route], content=body, headers=headers)
    assert res.status_code in (401, 403), (token, signature, res.text)
    assert res.json()["error"] in ("missing_token", "invalid_token", "missing_signature",
                                   "malformed_signature", "invalid_signature")


query_text = st.one_of(st.text(max_size=60), st.sampled_from(NASTY_STRINGS))


@FEW
@given(params=st.dictionaries(
    st.sampled_from(["start", "end", "channel", "campaign", "format", "limit", "cursor",
                     "summary", "unknown"]),
    query_text, max_size=5),
    path=st.sampled_from(["/funnel-report", "/funnel-report/daily"]))
def test_random_report_filters_get_200_or_422(params, path, sec_api, sec_settings):
    res = sec_api.client.get(path, params=params,
                             headers={"X-API-Key": sec_settings.api_key.get_secret_value()})
    assert res.status_code in (200, 422), (params, res.status_code, res.text[:300])
    if res.status_code == 422:
        assert res.json()["error"] in ("invalid_filter", "invalid_request"), res.text
