"""Worker processes that read and classify while the calling process stores.

A drain (`store.drain`) and a backfill's restore (`store.backfill`) hand the CPU-bound part of
a batch (reading the stream or the archive, parsing, classifying, formatting the rows as COPY
data) to spawned worker processes, so it runs on the other cores while this process and
Postgres store the batch before. What comes back is bytes (`funnel.message_copy`), cheap to
pass between processes.

Each worker holds what it needs for the whole run, built once by `pool`'s initializer: the
same classifier as the caller's, a Postgres connection to the same database (its adapters
format COPY data; the backfill also compares keys on it), and a Redis client or an S3 client
when the work reads one.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from functools import wraps
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import psycopg
import redis
from psycopg.conninfo import make_conninfo

from funnel_ingest.engine.classify import Classifier

T = TypeVar("T")


class State:
    """A worker process's state (set by `_start`)."""

    classifier: Classifier
    conn: psycopg.Connection
    redis: redis.Redis | None = None
    s3: Any = None


def pool(conn: psycopg.Connection, classifier: Classifier, *, processes: int = 1,
         redis_client: redis.Redis | None = None,
         s3_client: Callable[[], Any] | None = None) -> ProcessPoolExecutor:
    """`processes` spawned workers (the caller may have threads, so no fork) with `classifier`,
    the database of `conn`, the Redis server of `redis_client` and an S3 client from
    `s3_client` (a picklable factory)."""
    redis_kwargs = None
    if redis_client is not None:
        pool_ = redis_client.connection_pool
        redis_kwargs = {k: v for k, v in pool_.connection_kwargs.items()
                        if v is None or isinstance(v, (str, int, float, bool))}
        redis_kwargs["connection_class"] = pool_.connection_class
    password = conn.info.password
    conninfo = make_conninfo(conn.info.dsn, **({"password": password} if password else {}))
    return ProcessPoolExecutor(
        processes, mp_context=multiprocessing.get_context("spawn"), initializer=_start,
        initargs=(classifier.keywords, classifier.version, classifier.tz.key,
                  classifier.cache_size, conninfo, redis_kwargs, s3_client))


def _start(keywords: tuple, version: str, tz: str, cache_size: int, conninfo: str,
           redis_kwargs: dict | None, s3_client: Callable[[], Any] | None) -> None:
    State.classifier = Classifier(list(keywords), version, ZoneInfo(tz), cache_size)
    State.conn = psycopg.connect(conninfo, autocommit=True)
    if redis_kwargs is not None:
        State.redis = redis.Redis(connection_pool=redis.ConnectionPool(**redis_kwargs))
    if s3_client is not None:
        State.s3 = s3_client()
    # A batch allocates millions of short-lived objects and no cycles worth finding: the cyclic
    # collector, left on, would scan them again and again (a sixth of the worker's time); it
    # runs once after each batch instead (`task`), over the batch's garbage only (what
    # exists now, the classifier's tables included, is frozen out of its scans).
    gc.freeze()
    gc.disable()


def task(work: Callable[..., T]) -> Callable[..., T]:
    """`work(State, *args)` as a function to submit to a `pool` (module-level, so picklable by
    name): the batch's garbage is collected after it (the collector is off otherwise)."""
    @wraps(work)
    def run(*args: Any) -> T:
        try:
            return work(State, *args)
        finally:
            gc.collect()
    return run
