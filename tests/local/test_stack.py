"""The local stack manager against real processes: its own S3 server, the shared Postgres and
Redis (reused, never stopped), and a throwaway Postgres + Redis it starts and stops itself."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from botocore.exceptions import ClientError

from funnel_ingest.local import s3_server, stack
from funnel_ingest.settings import ENV_NAMES

SHARED_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/funnel_stacktest"
SHARED_REDIS_URL = "redis://127.0.0.1:6379/14"


def _isolate(mp: pytest.MonkeyPatch, root: Path, database_url: str, redis_url: str) -> int:
    """Point the stack at `root` with the given stores and a free S3 port; returns the port."""
    for name in ENV_NAMES:
        mp.delenv(name, raising=False)
    port = s3_server.free_s3_port()
    mp.chdir(root)  # no stray `.env` file
    mp.setenv("FUNNEL_STATE_DIR", str(root / "state"))
    mp.setenv("DATABASE_URL", database_url)
    mp.setenv("REDIS_URL", redis_url)
    mp.setenv("S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    return port


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A stack brought up once for this module on the shared Postgres/Redis; torn down after."""
    with pytest.MonkeyPatch.context() as mp:
        _isolate(mp, tmp_path_factory.mktemp("stack"), SHARED_DATABASE_URL, SHARED_REDIS_URL)
        env = stack.up(log=lambda _line: None)
        yield env
        stack.down(log=lambda _line: None)


def test_up_starts_an_s3_server_that_enforces_auth(running: dict[str, str]) -> None:
    endpoint = running["S3_ENDPOINT_URL"]
    good = s3_server.s3_client(endpoint, running["S3_ACCESS_KEY_ID"], running["S3_SECRET_ACCESS_KEY"])
    names = {bucket["Name"] for bucket in good.list_buckets()["Buckets"]}
    assert {running["RAW_BUCKET"], running["REPORTS_BUCKET"]} <= names
    good.put_object(Bucket=running["RAW_BUCKET"], Key="probe", Body=b"hello")
    assert good.get_object(Bucket=running["RAW_BUCKET"], Key="probe")["Body"].read() == b"hello"

    wrong_secret = s3_server.s3_client(endpoint, running["S3_ACCESS_KEY_ID"], "not-the-secret")
    unknown_key = s3_server.s3_client(endpoint, "nobody", running["S3_SECRET_ACCESS_KEY"])
    for client in (wrong_secret, unknown_key):
        with pytest.raises(ClientError):
            client.list_buckets()
        with pytest.raises(ClientError):
            client.put_object(Bucket=running["RAW_BUCKET"], Key="intruder", Body=b"x")


def test_up_twice_reuses_the_running_server(running: dict[str, str]) -> None:
    before = stack.status()["s3"]["pid"]
    assert before is not None
    again = stack.up(log=lambda _line: None)
    assert again == running
    assert stack.status()["s3"]["pid"] == before


def test_stack_env_is_complete_and_stable(running: dict[str, str]) -> None:
    first = stack.stack_env()
    assert set(first) == set(ENV_NAMES)
    assert first == stack.stack_env() == running
    for name in stack.GENERATED_NAMES:
        assert len(first[name]) >= 12, name
    assert (stack.state_dir() / "env").stat().st_mode & 0o077 == 0


def test_shared_postgres_and_redis_are_reused_not_managed(running: dict[str, str]) -> None:
    report = stack.status()
    assert report["postgres"] == {"url": SHARED_DATABASE_URL, "up": True, "managed": False}
    assert report["redis"] == {"url": SHARED_REDIS_URL, "up": True, "managed": False}
    assert report["s3"]["up"] is True
    assert report["s3"]["kind"] in ("minio", "seaweedfs")
    assert report["state_dir"] == str(stack.state_dir())
    with psycopg.connect(SHARED_DATABASE_URL, connect_timeout=3) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("funnel_stacktest",)


def test_down_stops_the_server_and_is_idempotent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _isolate(monkeypatch, tmp_path, SHARED_DATABASE_URL, SHARED_REDIS_URL)
    stack.up(log=lambda _line: None)
    assert not _port_closed(port)
    lines: list[str] = []
    stack.down(log=lines.append)
    assert _port_closed(port)
    assert any("stopped" in line for line in lines)
    stack.down(log=lines.append)  # nothing left to stop: no error
    report = stack.status()
    assert report["s3"]["up"] is False and report["s3"]["pid"] is None
    # the shared services were left alone
    assert report["postgres"]["up"] is True and report["redis"]["up"] is True


def test_up_refuses_an_s3_port_held_by_someone_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _isolate(monkeypatch, tmp_path, SHARED_DATABASE_URL, SHARED_REDIS_URL)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        with pytest.raises(RuntimeError, match=f"port {port}.*in use"):
            stack.up(log=lambda _line: None)


@pytest.mark.skipif(s3_server.s3_kind() != "seaweedfs", reason="port limit of weed only")
def test_up_refuses_an_s3_port_too_high_for_weed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _isolate(monkeypatch, tmp_path, SHARED_DATABASE_URL, SHARED_REDIS_URL)
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:30000")
    with pytest.raises(ValueError, match="below 22768"):
        stack.up(log=lambda _line: None)


def test_start_s3_server_helper(tmp_path: Path) -> None:
    port = s3_server.free_s3_port()
    proc = s3_server.start_s3_server(tmp_path / "s3", port, "helper-key", "helper-secret-key",
                                 tmp_path / "s3.log")
    try:
        s3_server.wait_s3_ready(f"http://127.0.0.1:{port}", "helper-key", "helper-secret-key",
                            timeout=30, proc=proc)
        with pytest.raises(TimeoutError):
            s3_server.wait_s3_ready(f"http://127.0.0.1:{port}", "helper-key", "wrong", timeout=1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def _have_local_servers() -> bool:
    has_pg = bool(shutil.which("initdb") or glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return has_pg and shutil.which("redis-server") is not None


@pytest.mark.skipif(not _have_local_servers(), reason="needs initdb/pg_ctl and redis-server")
def test_up_starts_and_down_stops_its_own_postgres_and_redis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not under pytest's tmp dir: that one is 0700, and as root Postgres runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="funnel-stack-"))
    os.chmod(root, 0o755)
    try:
        pg_port, redis_port = s3_server.free_s3_port(), s3_server.free_s3_port()
        database_url = f"postgresql://postgres@127.0.0.1:{pg_port}/funnel"
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        _isolate(monkeypatch, root, database_url, redis_url)
        stack.up(log=lambda _line: None)
        report = stack.status()
        assert report["postgres"] == {"url": database_url, "up": True, "managed": True}
        assert report["redis"] == {"url": redis_url, "up": True, "managed": True}
        with psycopg.connect(database_url, connect_timeout=3) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("funnel",)
        with redis.Redis.from_url(redis_url) as client:
            assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert stack.up(log=lambda _line: None) == stack.stack_env()
        assert stack.status()["postgres"]["managed"] is True

        stack.down(log=lambda _line: None)
        assert _port_closed(pg_port) and _port_closed(redis_port)
        report = stack.status()
        assert not report["postgres"]["managed"] and not report["redis"]["managed"]
    finally:
        stack.down(log=lambda _line: None)
        shutil.rmtree(root, ignore_errors=True)
