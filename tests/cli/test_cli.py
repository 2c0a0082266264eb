"""The `funnel` command line, run as operators run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from funnel_ingest.local.dagster import DAGSTER_VARS
from funnel_ingest.settings import ENV_NAMES, Settings

ROOT = Path(__file__).resolve().parents[2]
FUNNEL = [sys.executable, "-m", "funnel_ingest.cli"]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*FUNNEL, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_status_env_evaluates_into_exported_settings(stack_env):
    script = (f'eval "$({" ".join(FUNNEL)} status --env)" && '
              f'{sys.executable} -c "import os; print(os.environ[\'S3_ENDPOINT_URL\'])"')
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=ROOT,
                         env=clean, timeout=120)
    assert out.returncode == 0, out.stderr
    from funnel_ingest.local import stack
    assert out.stdout.strip() == stack.stack_env()["S3_ENDPOINT_URL"]


def test_status_env_prints_every_setting_once(stack_env):
    out = run("status", "--env")
    names = [line.split("=", 1)[0] for line in out.stdout.splitlines() if "=" in line]
    assert names == [*ENV_NAMES, *DAGSTER_VARS]


def test_status_env_exports_the_local_dagster_instance(stack_env):
    # idempotent; prepares the instance. Run as from an operator's shell: the test's settings
    # in the environment would be persisted as the stack's own.
    clean = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    assert subprocess.run([*FUNNEL, "up"], capture_output=True, text=True, cwd=ROOT, env=clean,
                          timeout=120).returncode == 0
    out = run("status", "--env")
    env = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    from funnel_ingest.local import stack
    assert env["DAGSTER_HOME"] == str(stack.state_dir() / "dagster")
    assert (stack.state_dir() / "dagster" / "dagster.yaml").exists()  # prepared by `funnel up`
    assert env["DAGSTER_PG_DB"].endswith("_dagster")


def test_status_reports_the_running_stack(stack_env):
    out = run("status")
    assert out.returncode == 0
    for name in ("postgres", "redis", "s3"):
        assert any(line.startswith(name) and " up " in line for line in out.stdout.splitlines())


def test_unreachable_database_gives_a_one_line_message_not_a_traceback():
    out = run("migrate", env={"DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert out.returncode == 1
    assert out.stderr.startswith("funnel migrate: ")
    assert "Traceback" not in out.stderr


def test_unknown_command_shows_usage():
    out = run("fly")
    assert out.returncode == 2 and "usage: funnel" in out.stderr


def test_unknown_timezone_is_refused():
    with pytest.raises(ValueError, match="unknown IANA time zone"):
        Settings(funnel_timezone="Asia/Atlantis")


def test_sharded_stream_names():
    s = Settings(stream_shards=4)
    assert s.stream_keys() == [f"funnel:messages:{n}" for n in range(4)]
    assert Settings(stream_shards=1).stream_keys() == ["funnel:messages"]


@pytest.mark.parametrize("args, message", [
    (["--since", "yesterday"], "neither an ISO date/time nor a duration"),
    (["--since", "2026-11-02", "--until", "2026-11-01"], "--until is before --since"),
])
def test_replay_refuses_a_bad_window_with_a_message(stack_env, args, message):
    out = run("replay", *args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_replay_dry_run_on_an_empty_window_reports_nothing_missing(stack_env):
    out = run("replay", "--since", "2001-01-01T00:00", "--until", "2001-01-01T01:00",
              "--dry-run")
    assert out.returncode == 0, out.stderr
    assert "archive objects read: 0" in out.stdout
    assert "dry run: 0 items would be re-enqueued" in out.stdout
