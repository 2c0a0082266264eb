"""Postgres for the local stack: reused when `DATABASE_URL` answers, else an `initdb`
cluster of the system packages in the state dir (run as the `postgres` user when root)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from funnel_ingest import db
from funnel_ingest.local.processes import (
    Log,
    alive,
    apt_install,
    host_port,
    log_tail,
    redact_url,
    tcp_open,
)

# --------------------------------------------------------------------------- Postgres


def pg_error(url: str) -> str | None:
    """None if the server of `url` accepts a connection to its `postgres` db, else the error."""
    try:
        with psycopg.connect(url, dbname="postgres", connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return str(exc).strip() or type(exc).__name__


def _create_database(url: str, log: Log) -> None:
    """Create the URL's database on its server if missing."""
    if db.ensure_database(url):
        log(f"postgres: created database {urlsplit(url).path.lstrip('/')}")


def pg_bin_dir() -> Path | None:
    """Directory holding `initdb` and `pg_ctl`: PATH first, else the newest /usr/lib/postgresql."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(pg_ctl).resolve().parent
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
                  if (p.parent / "initdb").exists()]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return candidates[-1] if candidates else None


def as_postgres(cmd: list[str]) -> list[str]:
    """Postgres refuses root: run as the `postgres` system user when we are root."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _prepare_pg_dirs(data_dir: Path, log_file: Path) -> None:
    """Create the data dir (0700) and log file; when root, hand both to `postgres`."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    log_file.touch()
    if os.geteuid() != 0:
        return
    try:
        user = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise RuntimeError("running as root needs a `postgres` system user for Postgres") from exc
    for path in (data_dir, log_file):
        os.chown(path, user.pw_uid, user.pw_gid)
    probe = ["test", "-w", str(data_dir), "-a", "-w", str(log_file)]
    if subprocess.run(as_postgres(probe)).returncode:
        raise RuntimeError(
            f"the postgres user cannot write {data_dir}: when running as root, set "
            "FUNNEL_STATE_DIR to a directory whose parents are world-searchable "
            "(e.g. /var/tmp/funnel)"
        )


def _pg_ctl(bin_dir: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data_dir), *args])
    return subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _start_postgres(root: Path, url: str, log: Log) -> dict[str, Any]:
    """initdb (once, trust auth) into `<state>/pg` and start it on the URL's host/port."""
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        apt_install("postgresql", log)
        bin_dir = pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError("postgresql installed but initdb/pg_ctl not found")
    host, port = host_port(url, 5432)
    data_dir, log_file = root / "pg", root / "logs" / "postgres.log"
    _prepare_pg_dirs(data_dir, log_file)
    if not (data_dir / "PG_VERSION").exists():
        user = urlsplit(url).username or "postgres"
        log(f"postgres: initdb {data_dir}")
        init = subprocess.run(
            as_postgres([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user,
                          "--auth=trust", "-E", "UTF8", "--no-locale"]),
            capture_output=True, text=True,
        )
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{init.stdout[-1500:]}{init.stderr[-1500:]}")
    started = _pg_ctl(bin_dir, data_dir, "-l", str(log_file), "-w", "-t", "60",
                      "-o", f"-h {host} -p {port} -k ''", "start")
    if started.returncode:
        raise RuntimeError(f"pg_ctl start failed:\n{started.stderr}\n--- {log_file} ---\n"
                           f"{log_tail(log_file)}")
    pid = _postmaster_pid(data_dir)
    log(f"postgres: started pid {pid} on {host}:{port} (log {log_file})")
    return {"managed": True, "pid": pid, "bin_dir": str(bin_dir)}


def ensure_postgres(root: Path, url: str, state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Use the server of `url` when it answers (keeping `managed` if it is ours), else start one."""
    record = state.get("postgres") or {}
    error = pg_error(url)
    if error is None:
        ours = bool(record.get("managed")) and alive(record.get("pid"), "postgres")
        log(f"postgres: using {redact_url(url)}{' (managed)' if ours else ''}")
        result = record if ours else {"managed": False, "pid": None}
    elif tcp_open(*host_port(url, 5432)):
        raise RuntimeError(f"a server listens at {redact_url(url)} but refuses us: {error}")
    else:
        result = _start_postgres(root, url, log)
    _create_database(url, log)
    return result


def stop_postgres(root: Path, record: dict[str, Any], log: Log) -> None:
    """`pg_ctl stop -m fast` the Postgres that `up()` started, if it still runs."""
    if not (record.get("managed") and alive(record.get("pid"), "postgres")):
        return
    stopped = _pg_ctl(Path(record["bin_dir"]), root / "pg", "-m", "fast", "-w", "stop")
    if stopped.returncode:
        raise RuntimeError(f"pg_ctl stop failed: {stopped.stderr.strip()}")
    log(f"postgres: stopped pid {record['pid']}")


