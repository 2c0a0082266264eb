"""Redis for the local stack: reused when `REDIS_URL` answers, else a `redis-server`
of the system packages in the state dir."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis

from funnel_ingest.local.processes import (
    Log,
    alive,
    apt_install,
    host_port,
    log_tail,
    redact_url,
    spawn,
    tcp_open,
    terminate,
)

# --------------------------------------------------------------------------- Redis


def redis_error(url: str) -> str | None:
    """None if the server of `url` answers PING, else the error."""
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as client:
            client.ping()
    except redis.RedisError as exc:
        return str(exc) or type(exc).__name__
    return None


def _start_redis(root: Path, url: str, log: Log) -> dict[str, Any]:
    """Start `redis-server` (AOF in `<state>/redis`) on the URL's port, loopback only."""
    binary = shutil.which("redis-server")
    if binary is None:
        apt_install("redis-server", log)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = host_port(url, 6379)[1]
    data_dir, log_file = root / "redis", root / "logs" / "redis.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--appendonly", "yes", "--dir", str(data_dir), "--port", str(port),
           "--bind", "127.0.0.1", "--daemonize", "no"]
    password = urlsplit(url).password
    if password:
        cmd += ["--requirepass", password]
    proc = spawn(cmd, log_file)
    deadline = time.monotonic() + 15
    while redis_error(url) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            terminate(proc.pid, "redis-server")
            raise RuntimeError(f"redis-server did not start:\n{log_tail(log_file)}")
        time.sleep(0.1)
    log(f"redis: started pid {proc.pid} on 127.0.0.1:{port} (log {log_file})")
    return {"managed": True, "pid": proc.pid}


def ensure_redis(root: Path, url: str, state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Use the server of `url` when it answers PING (keeping `managed` if ours), else start one."""
    record = state.get("redis") or {}
    error = redis_error(url)
    if error is not None and tcp_open(*host_port(url, 6379)):
        raise RuntimeError(f"a server listens at {redact_url(url)} but refuses us: {error}")
    if error is not None:
        return _start_redis(root, url, log)
    ours = bool(record.get("managed")) and alive(record.get("pid"), "redis-server")
    log(f"redis: using {redact_url(url)}{' (managed)' if ours else ''}")
    return record if ours else {"managed": False, "pid": None}


