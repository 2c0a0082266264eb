"""Shared set-up of the benchmarks: the local stack and throwaway databases on it."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funnel_ingest import db, stack  # noqa: E402


def stack_env(quiet: bool = False) -> dict[str, str]:
    """`funnel up` (idempotent) and the stack's settings."""
    return dict(stack.up(log=(lambda m: None) if quiet else
                         (lambda m: print(m, file=sys.stderr))))


def fresh_database(env: dict[str, str], name: str, *also_drop: str) -> str:
    """Drop `name` (and `also_drop`), create it on the stack's server, migrate it; its URL."""
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True) as admin:
        for db_name in (name, *also_drop):
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    url = f"{base}/{name}"
    db.ensure_database(url)
    db.migrate(url)
    return url


def redis_db(env: dict[str, str], number: int) -> str:
    """The stack's Redis URL with another database number."""
    return env["REDIS_URL"].rsplit("/", 1)[0] + f"/{number}"
