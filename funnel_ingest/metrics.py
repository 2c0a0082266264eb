"""Prometheus metrics of the ingest service.

One API process: the metrics live in `REGISTRY`. Several granian workers (`API_WORKERS` > 1):
`funnel api` gives them one fresh `PROMETHEUS_MULTIPROC_DIR` before they start, each worker
writes its samples to memory-mapped files there, and `/metrics` — whichever worker answers —
aggregates all of them (`MultiProcessCollector`): counters and histograms are summed, the
stream gauges report the value most recently set by any worker.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()

# Fixed when prometheus_client is first imported, as its value class is (see prometheus_client.values).
MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get(
    "prometheus_multiproc_dir") or ""

REGISTRY = CollectorRegistry(auto_describe=True)

RECEIVED = Counter("funnel_webhooks_received_total", "Webhook requests received.",
                   ["source"], registry=REGISTRY)
ACCEPTED = Counter("funnel_webhooks_accepted_total", "Webhook requests acknowledged (2xx).",
                   ["source"], registry=REGISTRY)
REJECTED = Counter("funnel_webhooks_rejected_total", "Webhook requests refused, by reason.",
                   ["source", "reason"], registry=REGISTRY)
EDGE_REFUSED = Counter("funnel_http_refused_total",
                       "Requests refused by the body limits (busy: 503, body_timeout: 408).",
                       ["reason"], registry=REGISTRY)
ITEMS = Counter("funnel_items_total",
                "Items parsed from acknowledged requests (message, status, deadletter).",
                ["source", "kind"], registry=REGISTRY)
APPENDED = Counter("funnel_items_appended_total",
                   "Items newly appended to the streams (redeliveries excluded).",
                   ["source"], registry=REGISTRY)
DUPLICATES = Counter("funnel_duplicates_total",
                     "Redelivered messages/statuses recognised and not appended again.",
                     ["source"], registry=REGISTRY)
UNAVAILABLE = Counter("funnel_store_failures_total",
                      "Requests answered 503 because a store failed (s3, redis).",
                      ["store"], registry=REGISTRY)
# Refreshed from Redis by the worker that answers /metrics: the most recent value is the truth.
STREAM_LENGTH = Gauge("funnel_stream_length", "Entries in each stream.", ["stream"],
                      registry=REGISTRY, multiprocess_mode="mostrecent")
STREAM_OLDEST_AGE = Gauge("funnel_stream_oldest_age_seconds",
                          "Age of the oldest entry of each stream (entries leave once drained).",
                          ["stream"], registry=REGISTRY, multiprocess_mode="mostrecent")
LATENCY = Histogram("funnel_request_seconds", "Request latency by route.", ["route"],
                    buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5),
                    registry=REGISTRY)
STORE_LATENCY = Histogram("funnel_store_seconds", "Latency of one store write (s3 PUT, redis append).",
                          ["store"], buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5),
                          registry=REGISTRY)
ARCHIVE_BATCH = Histogram("funnel_archive_batch_bodies", "Request bodies per archive object.",
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY)


def exposition() -> bytes:
    """The Prometheus text of this process, or of every worker in multiprocess mode."""
    if MULTIPROCESS_DIR:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=MULTIPROCESS_DIR)
        return generate_latest(registry)
    return generate_latest(REGISTRY)
