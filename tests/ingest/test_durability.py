"""A 2xx means the body is in S3 and its messages are on the stream; a failed store means 503."""

from __future__ import annotations

import redis

from tests.support import ApiServer, metric, payload, raw_objects


def test_s3_down_answers_503_and_appends_nothing(settings, r, throwaway_s3):
    cfg = settings.replace(**{
        "s3_endpoint_url": throwaway_s3["endpoint"], "s3_access_key_id": throwaway_s3["key"],
        "s3_secret_access_key": throwaway_s3["secret"], "raw_bucket": "durability-raw"})
    from funnel_ingest import s3
    s3.ensure_buckets(cfg)
    with ApiServer(cfg) as api:
        assert api.whatsapp(payload("whatsapp_text.json")).status_code == 200
        throwaway_s3["proc"].kill()
        throwaway_s3["proc"].wait()
        res = api.whatsapp(payload("whatsapp_multi_entry.json"))
        assert res.status_code == 503
        assert res.json()["error"] == "archive_unavailable"
        assert r.xlen("funnel:messages") == 1  # only the first, acknowledged request
        ready = api.client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["s3"] != "ok"


def test_redis_down_answers_503(settings, r, throwaway_redis, s3_client):
    cfg = settings.replace(**{"redis_url": throwaway_redis})
    with ApiServer(cfg) as api:
        assert api.whatsapp(payload("whatsapp_text.json")).status_code == 200
        redis.Redis.from_url(throwaway_redis).shutdown(nosave=True)
        res = api.whatsapp(payload("whatsapp_referral.json"))
        assert res.status_code == 503
        assert res.json()["error"] == "stream_unavailable"
        assert api.client.get("/readyz").json()["checks"]["redis"] != "ok"


def test_redelivery_after_a_failed_append_is_appended_once(settings, r, throwaway_redis):
    """Redis fails after the archive write: the provider retries and the message lands once."""
    cfg = settings.replace(**{"redis_url": throwaway_redis})
    body = payload("whatsapp_referral.json")
    with ApiServer(cfg) as api:
        client = redis.Redis.from_url(throwaway_redis)
        client.config_set("maxmemory", "1")  # writes refused: OOM
        client.config_set("maxmemory-policy", "noeviction")
        assert api.whatsapp(body).status_code == 503
        client.config_set("maxmemory", "0")
        assert api.whatsapp(body).status_code == 200
        assert api.whatsapp(body).json()["duplicates"] == 1
        assert client.xlen("funnel:messages") == 1


def test_redelivered_message_is_acknowledged_again_and_appended_once(api, r, s3_client):
    body = payload("whatsapp_multi_entry.json")
    dup_before = metric(api, "funnel_duplicates_total", source="whatsapp")
    first = api.whatsapp(body)
    again = api.whatsapp(body)
    assert first.status_code == again.status_code == 200
    assert first.json()["duplicates"] == 0
    assert again.json()["duplicates"] == 3
    assert r.xlen("funnel:messages") == 3
    assert metric(api, "funnel_duplicates_total", source="whatsapp") == dup_before + 3


def test_same_statuses_twice_are_recorded_once(api, r):
    api.whatsapp(payload("whatsapp_statuses.json"))
    api.whatsapp(payload("whatsapp_statuses.json"))
    assert r.xlen("funnel:statuses") == 2


def test_acknowledged_bodies_are_all_in_the_archive(api, r, s3_client):
    from funnel_ingest.ingest import archive
    names = ["whatsapp_text.json", "whatsapp_referral.json", "whatsapp_image.json"]
    keys = {api.whatsapp(payload(n)).json()["raw_key"] for n in names}
    stored = set()
    for key in keys:
        data = s3_client.get_object(Bucket=api.settings.raw_bucket, Key=key)["Body"].read()
        stored |= {rec["body"] for rec in archive.read_lines(data)}
    assert {payload(n).decode() for n in names} <= stored
    assert keys <= set(raw_objects(s3_client, api.settings.raw_bucket))
