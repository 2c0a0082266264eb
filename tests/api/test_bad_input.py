"""Malformed bodies get a precise 4xx, are counted, and leave nothing behind."""

from __future__ import annotations

import orjson
import pytest

from tests.support import metric, payload, raw_objects

WA = orjson.loads(payload("whatsapp_text.json"))
QONTAK = orjson.loads(payload("qontak_customer.json"))
GENERIC = orjson.loads(payload("generic_customer.json"))


def _wa(mutate) -> bytes:
    body = orjson.loads(orjson.dumps(WA))
    mutate(body)
    return orjson.dumps(body)


def _msg(body):
    return body["entry"][0]["changes"][0]["value"]["messages"][0]


def _without(d: dict, *path: str) -> bytes:
    body = orjson.loads(orjson.dumps(d))
    target = body
    for p in path[:-1]:
        target = target[p]
    del target[path[-1]]
    return orjson.dumps(body)


def _with(d: dict, **changes) -> bytes:
    return orjson.dumps({**d, **changes})


# (route, body, status, error): twenty-two ways to be wrong
CASES = [
    ("whatsapp", b"", 400, "malformed_json"),
    ("whatsapp", b"{not json", 400, "malformed_json"),
    ("whatsapp", b'{"object": "whatsapp_business_account", "entry": [', 400, "malformed_json"),
    ("whatsapp", b"\xff\xfe{}", 400, "invalid_utf8"),
    ("whatsapp", b"[]", 422, "wrong_shape"),
    ("whatsapp", b'{"object": "page", "entry": []}', 422, "wrong_shape"),
    ("whatsapp", b'{"object": "whatsapp_business_account", "entry": []}', 422, "wrong_shape"),
    ("whatsapp", _wa(lambda b: _msg(b).pop("id")), 422, "missing_id"),
    ("whatsapp", _wa(lambda b: _msg(b).pop("timestamp")), 422, "missing_timestamp"),
    ("whatsapp", _wa(lambda b: _msg(b).update(timestamp="yesterday")), 422, "bad_timestamp"),
    ("whatsapp", _wa(lambda b: _msg(b).update(timestamp="99999999999")), 422, "bad_timestamp"),
    ("whatsapp", _wa(lambda b: _msg(b).update(text="plain string")), 422, "wrong_shape"),
    ("whatsapp", b"[" * 5000 + b"]" * 5000, 400, "malformed_json"),
    ("qontak", _without(QONTAK, "id"), 422, "missing_id"),
    ("qontak", _without(QONTAK, "created_at"), 422, "missing_timestamp"),
    ("qontak", _without(QONTAK, "room"), 422, "wrong_shape"),
    ("qontak", _with(QONTAK, created_at="3 March"), 422, "bad_timestamp"),
    ("qontak", b'"just a string"', 422, "wrong_shape"),
    ("generic", _without(GENERIC, "message", "id"), 422, "missing_id"),
    ("generic", _without(GENERIC, "timestamp"), 422, "missing_timestamp"),
    ("generic", _with(GENERIC, sender={"type": "robot"}), 422, "wrong_shape"),
    ("generic", b"[]", 422, "wrong_shape"),
]


def _send(api, route: str, body: bytes):
    if route == "whatsapp":
        return api.whatsapp(body)
    return api.crm("/webhooks/qontak" if route == "qontak" else "/webhook", body)


def _rejected(api, route: str, reason: str) -> float:
    return metric(api, "funnel_webhooks_rejected_total", source=route, reason=reason)


@pytest.mark.parametrize("route, body, status, error", CASES,
                         ids=[f"{i:02d}-{c[0]}-{c[3]}" for i, c in enumerate(CASES)])
def test_malformed_body_is_refused_with_its_reason_and_nothing_is_written(
        api, r, s3_client, route, body, status, error):
    objects_before = len(raw_objects(s3_client, api.settings.raw_bucket))
    counted_before = _rejected(api, route, error)
    res = _send(api, route, body)
    assert res.status_code == status, res.text
    assert res.json()["error"] == error
    assert res.json()["detail"]
    assert _rejected(api, route, error) == counted_before + 1
    for stream in ("funnel:messages", "funnel:statuses", "funnel:deadletter"):
        assert r.xlen(stream) == 0
    assert len(raw_objects(s3_client, api.settings.raw_bucket)) == objects_before


def test_body_over_the_limit_is_refused_before_it_is_read(settings, r, s3_client):
    from tests.support import ApiServer

    small = settings.replace(**{"max_body_bytes": 2048})
    with ApiServer(small) as api:
        body = _wa(lambda b: _msg(b)["text"].update(body="x" * 4096))
        res = api.whatsapp(body)
        assert res.status_code == 413 and res.json()["error"] == "body_too_large"
        assert r.xlen("funnel:messages") == 0


def test_missing_signature_error_names_the_header(api, r):
    res = api.whatsapp(payload("whatsapp_text.json"), signature=None)
    assert "signature" in res.json()["detail"]
