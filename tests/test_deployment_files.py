"""The deployment files: docker-compose.yml, Dockerfile, .env.example, dagster.yaml, workspace.yaml.

No Docker engine is needed: the compose file is checked as data (and with `docker compose config`
where the compose plugin exists); `dagster.yaml` is loaded into a real `DagsterInstance` against a
throwaway database on the local Postgres.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import yaml

from funnel_ingest.settings import ENV_NAMES

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DAGSTER_YAML = ROOT / "dagster.yaml"
WORKSPACE_YAML = ROOT / "workspace.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

SERVICES = {"postgres", "redis", "minio", "minio-init", "proxy",
            "api", "dagster-webserver", "dagster-daemon"}
ONE_SHOT = {"minio-init"}
APP_SERVICES = ("api", "dagster-webserver", "dagster-daemon")
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
DAGSTER_PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME",
                   "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")
# Health checks that always pass (or never run) are not health checks.
_FAKE_CHECKS = {"", "true", "/bin/true", "exit 0", ":", "none"}


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]


def _env_example() -> tuple[dict[str, str], set[str], list[str]]:
    """(active NAME=value pairs, names only shown commented out `# NAME=...`, all lines)."""
    lines = ENV_EXAMPLE.read_text().splitlines()
    active: dict[str, str] = {}
    commented: set[str] = set()
    for line in lines:
        if m := re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line):
            assert m.group(1) not in active, f"{m.group(1)} is set twice in .env.example"
            active[m.group(1)] = m.group(2)
        elif m := re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line):
            commented.add(m.group(1))
    return active, commented, lines


def _strings(node: object):
    """Every string (key or value) of a parsed YAML document: what Compose interpolates."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _strings(key)
            yield from _strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _interpolated_names(data: object) -> set[str]:
    """Variables Compose interpolates: `${VAR...}` and `$VAR`, not the escaped `$$`."""
    names: set[str] = set()
    for text in _strings(data):
        for m in re.finditer(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)|[A-Za-z_][A-Za-z0-9_]*)", text):
            token = m.group(1)
            if token == "$":
                continue  # `$$` is a literal dollar for the container's shell
            names.add(m.group(2) or token)
    return names


def _check_command(healthcheck: dict) -> str:
    test = healthcheck["test"]
    if isinstance(test, str):
        return test.strip()
    kind, *argv = test
    assert kind in {"CMD", "CMD-SHELL"}, f"healthcheck test must start with CMD(-SHELL): {test}"
    return " ".join(argv).strip()


def _depends_on(service: dict) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):  # short syntax: no condition means service_started
        return {name: "service_started" for name in deps}
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_is_compose_spec_with_all_services(compose: dict, services: dict) -> None:
    assert "version" not in compose, "the Compose spec has no top-level `version:`"
    assert SERVICES <= set(services), f"missing services: {SERVICES - set(services)}"


def test_long_running_services_have_real_healthchecks(services: dict) -> None:
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check, f"{name}: no healthcheck"
        assert not check.get("disable"), f"{name}: healthcheck disabled"
        command = _check_command(check)
        assert command.lower() not in _FAKE_CHECKS, f"{name}: healthcheck `{command}` always passes"
        assert check.get("interval") and check.get("retries"), f"{name}: set interval and retries"


def test_healthchecks_probe_the_right_thing(services: dict) -> None:
    checks = {name: _check_command(services[name]["healthcheck"]) for name in services
              if name not in ONE_SHOT}
    assert "pg_isready" in checks["postgres"]
    assert "-U" in checks["postgres"] and "-d" in checks["postgres"]
    assert "redis-cli ping" in checks["redis"]
    assert "mc ready local" in checks["minio"] or "/minio/health/live" in checks["minio"]
    assert "urllib" in checks["api"] and "127.0.0.1:8000/readyz" in checks["api"]
    assert "urllib" in checks["dagster-webserver"]
    assert "127.0.0.1:3000/server_info" in checks["dagster-webserver"]
    assert "dagster-daemon liveness-check" in checks["dagster-daemon"]


def test_store_images_and_volumes(compose: dict, services: dict) -> None:
    assert services["postgres"]["image"].startswith("postgres:15")
    assert services["redis"]["image"].startswith("redis:7")
    assert services["minio"]["image"].startswith("minio/minio")
    assert services["minio-init"]["image"].startswith("minio/mc")
    declared = set(compose.get("volumes") or {})
    for name in ("postgres", "redis", "minio"):
        mounts = services[name].get("volumes") or []
        named = {m.split(":", 1)[0] for m in mounts if isinstance(m, str)}
        assert named & declared, f"{name}: data is not on a declared named volume"
    for name, service in services.items():
        for mount in service.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source!r} is not declared"


def test_the_proxy_fronts_the_api_with_its_limits(services: dict) -> None:
    proxy = services["proxy"]
    assert proxy["image"].startswith("nginx:")
    assert _depends_on(proxy) == {"api": "service_healthy"}
    assert "./deploy/nginx/templates:/etc/nginx/templates:ro" in [str(m) for m in proxy["volumes"]]
    template = (ROOT / "deploy" / "nginx" / "templates" / "funnel.conf.template").read_text()
    # every variable the template uses is set by the service (the image renders only those)
    used = set(re.findall(r"\$\{(\w+)\}", template))
    assert used and used <= set(_environment(proxy)), used - set(_environment(proxy))
    for directive in ("client_header_timeout", "client_body_timeout",
                      "large_client_header_buffers", "client_max_body_size", "limit_conn "):
        assert directive in template, directive


def test_redis_persists_with_append_only_file(services: dict) -> None:
    command = services["redis"]["command"]
    argv = command.split() if isinstance(command, str) else [str(a) for a in command]
    assert "--appendonly" in argv and argv[argv.index("--appendonly") + 1] == "yes"
    assert "--appendfsync" in argv and argv[argv.index("--appendfsync") + 1] == "everysec"


def test_minio_init_creates_both_buckets_once(services: dict) -> None:
    init = services["minio-init"]
    assert str(init.get("restart", "no")) == "no"
    assert _depends_on(init) == {"minio": "service_healthy"}
    script = " ".join(init.get("command") if isinstance(init.get("command"), list)
                      else [init.get("command") or ""])
    script += " ".join(init.get("entrypoint") or [])
    assert "mc alias set" in script
    assert script.count("mc mb --ignore-existing") >= 2
    env = _environment(init)
    assert "RAW_BUCKET" in env["RAW_BUCKET"] and "REPORTS_BUCKET" in env["REPORTS_BUCKET"]


def test_app_services_wait_for_their_stores(services: dict) -> None:
    for name in APP_SERVICES:
        deps = _depends_on(services[name])
        assert deps.get("postgres") == "service_healthy", f"{name}: must wait for postgres healthy"
    api = _depends_on(services["api"])
    assert api.get("redis") == "service_healthy"
    assert api.get("minio-init") == "service_completed_successfully"


def test_app_services_share_one_image_and_point_at_service_names(services: dict) -> None:
    for name in APP_SERVICES:
        service = services[name]
        assert service["build"]["context"] == "."
        env = _environment(service)
        assert re.fullmatch(r"postgresql://.+@postgres:5432/.+", env["DATABASE_URL"])
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000"
        env_files = service.get("env_file")
        paths = [f if isinstance(f, str) else f["path"] for f in
                 (env_files if isinstance(env_files, list) else [env_files])]
        assert ".env" in paths, f"{name}: must read .env"
    assert "8000:8000" in [str(p) for p in services["proxy"]["ports"]]
    assert "ports" not in services["api"], "the API is reached through the proxy only"
    assert any(str(p).endswith("3000:3000") for p in services["dagster-webserver"]["ports"])
    assert "command" not in services["api"], "the api runs the image's default CMD"


def test_dagster_services_configure_the_instance_storage(services: dict) -> None:
    for name in DAGSTER_SERVICES:
        service = services[name]
        command = " ".join(service["command"])
        assert "-w /app/workspace.yaml" in command
        env = _environment(service)
        for var in DAGSTER_PG_VARS:
            assert env.get(var), f"{name}: {var} must be set (dagster.yaml reads it)"
        assert env["DAGSTER_PG_HOST"] == "postgres"
        # The same server/credentials as DATABASE_URL.
        url = urlsplit(env["DATABASE_URL"])
        assert env["DAGSTER_PG_USERNAME"] in url.netloc and env["DAGSTER_PG_PASSWORD"] in url.netloc
    assert services["dagster-webserver"]["command"][0] == "dagster-webserver"
    assert services["dagster-daemon"]["command"][:2] == ["dagster-daemon", "run"]


def test_compose_variables_are_documented_in_env_example(compose: dict) -> None:
    active, _, _ = _env_example()
    used = _interpolated_names(compose)
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"} <= used
    missing = sorted(used - set(active))
    assert not missing, f"used in docker-compose.yml but not set in .env.example: {missing}"


def test_compose_credentials_are_interpolated_with_defaults() -> None:
    text = COMPOSE.read_text()
    for var in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB",
                "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        assert re.search(r"\$\{" + var + r":-[^}]+\}", text), f"use ${{{var}:-default}}"


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on PATH")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no output"])[0]
        pytest.skip(f"`docker compose` is not available here ({reason})")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- .env.example


def test_env_example_lists_every_setting_with_a_comment() -> None:
    active, commented, lines = _env_example()
    expected = [*ENV_NAMES, "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", *DAGSTER_PG_VARS]
    missing = [name for name in expected if name not in active]
    assert not missing, f"not in .env.example: {missing}"
    assert {"KEYWORDS_CSV", "LEAD_WINDOW_DAYS"} <= set(active) | commented
    for i, line in enumerate(lines):
        m = re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=.*", line)
        if m:
            above = lines[i - 1] if i else ""
            is_comment = (above.startswith("# ") and not above.startswith("# ---")
                          and not re.fullmatch(r"#\s*[A-Z0-9_]+=.*", above))
            assert is_comment, f"{m.group(1)}: needs a one-line comment right above it"


def test_every_setting_is_in_env_example_and_the_readme() -> None:
    from funnel_ingest.settings import Settings

    active, commented, _ = _env_example()
    readme = (ROOT / "README.md").read_text()
    names = [name.upper() for name in Settings.model_fields]
    assert [n for n in names if n not in set(active) | commented] == []
    assert [n for n in names if f"`{n}`" not in readme] == []


def test_env_example_holds_no_real_secrets() -> None:
    active, _, _ = _env_example()
    for name in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "POSTGRES_PASSWORD",
                 "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN", "WEBHOOK_TOKEN",
                 "WEBHOOK_HMAC_SECRET", "API_KEY", "DAGSTER_PG_PASSWORD"):
        assert active[name].startswith("change-me-"), f"{name}: use a change-me-... placeholder"
    assert len(active["S3_SECRET_ACCESS_KEY"]) >= 8, "MinIO needs a root password of 8+ chars"
    assert "change-me-" in active["DATABASE_URL"]


def test_env_example_values_are_accepted_by_settings(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from funnel_ingest.settings import Settings

    active, _, _ = _env_example()
    monkeypatch.chdir(tmp_path)  # no stray ./.env
    for name in ENV_NAMES:
        monkeypatch.setenv(name, active[name])
    settings = Settings()
    assert settings.as_env() == {name: active[name] for name in ENV_NAMES}


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_one_non_root_image() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    for source in ("pyproject.toml", "README.md", "funnel_ingest/", "funnel_dagster/", "sql/",
                   "dagster.yaml", "workspace.yaml"):
        assert re.search(rf"^COPY .*\b{re.escape(source)}", text, re.MULTILINE), f"COPY {source}"
        assert (ROOT / source).exists(), f"{source} is copied but missing"
    assert re.search(r"pip install (--no-deps )?\.", text)
    assert "DAGSTER_HOME=/opt/dagster/home" in text and "FUNNEL_SQL_DIR=/app/sql" in text
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}, "the image must not run as root"
    cmd = re.findall(r"^CMD\s+(.+)$", text, re.MULTILINE)[-1]
    assert yaml.safe_load(cmd) == ["funnel", "api", "--host", "0.0.0.0", "--port", "8000"]


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")}
    assert {".env", ".venv", ".git"} <= patterns
    for needed in ("pyproject.toml", "README.md", "funnel_ingest", "funnel_dagster", "sql",
                   "dagster.yaml", "workspace.yaml"):
        assert needed not in patterns, f"{needed} is needed by the image build"


# --------------------------------------------------------------------------- Dagster


def test_workspace_loads_the_funnel_dagster_location() -> None:
    workspace = yaml.safe_load(WORKSPACE_YAML.read_text())
    (entry,) = workspace["load_from"]
    assert entry["python_module"] == {"module_name": "funnel_dagster.definitions",
                                      "working_directory": ".", "location_name": "funnel_dagster"}


def test_definitions_are_loadable() -> None:
    import dagster as dg

    from funnel_dagster.definitions import defs

    loaded = defs()  # @dg.definitions: loaded when called (migrations first)
    assert isinstance(loaded, dg.Definitions)
    dg.Definitions.validate_loadable(loaded)


@pytest.mark.slow
def test_dagster_definitions_validate_cli(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env["DAGSTER_HOME"] = str(tmp_path)  # an empty home: ephemeral instance, no Postgres needed
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(WORKSPACE_YAML)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All code locations passed validation" in result.stdout + result.stderr


def _admin_url() -> str:
    """A superuser URL on the local Postgres' maintenance database (to create/drop a database)."""
    if url := os.environ.get("FUNNEL_TEST_PG_ADMIN_URL"):
        return url
    if url := os.environ.get("DATABASE_URL"):
        parts = urlsplit(url)
        return urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    return "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture
def throwaway_pg_db():
    """A fresh database on the local Postgres, dropped afterwards: yields its URL parts."""
    psycopg = pytest.importorskip("psycopg")
    admin = _admin_url()
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        parts = urlsplit(admin)
        pytest.skip(f"no local Postgres at {parts.hostname}:{parts.port or 5432}: {exc}")
    name = f"dagster_test_{uuid.uuid4().hex[:12]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlsplit(admin), name
        finally:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_dagster_yaml_loads_a_postgres_instance(throwaway_pg_db, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import dagster as dg
    from dagster._core.scheduler.instigation import InstigatorType, TickStatus
    from dagster_postgres import (
        PostgresEventLogStorage,
        PostgresRunStorage,
        PostgresScheduleStorage,
    )

    admin, db_name = throwaway_pg_db
    monkeypatch.setenv("DAGSTER_PG_HOST", admin.hostname or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(admin.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USERNAME", admin.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", admin.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", db_name)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DAGSTER_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))

    instance = dg.DagsterInstance.get()
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # psycopg2, not SQLAlchemy's psycopg 3 default for a bare postgresql:// URL.
        assert instance.run_storage._engine.url.drivername == "postgresql+psycopg2"
        assert instance.event_log_storage._engine.url.drivername == "postgresql+psycopg2"
        assert instance.event_log_storage._engine.url.database == db_name

        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        queue = instance.run_coordinator.get_run_queue_config()
        assert queue.max_concurrent_runs >= 1
        assert {"key": "funnel/shard", "value": {"applyLimitPerUniqueValue": True},
                "limit": 1} in queue.tag_concurrency_limits
        assert type(instance.run_launcher).__name__ == "MonitoredRunLauncher"
        assert instance.run_launcher.supports_check_run_worker_health
        assert instance.run_monitoring_enabled
        assert not instance.telemetry_enabled
        for kind in (InstigatorType.SCHEDULE, InstigatorType.SENSOR):
            retention = instance.get_tick_retention_settings(kind)
            assert retention[TickStatus.SKIPPED] == 7
            assert retention[TickStatus.SUCCESS] == 30
            assert retention[TickStatus.FAILURE] == 90

        # The storage really works: a run and its events round-trip through Postgres.
        @dg.op
        def ping() -> int:
            return 1

        @dg.job
        def deployment_smoke() -> None:
            ping()

        result = deployment_smoke.execute_in_process(instance=instance,
                                                     tags={"funnel/shard": "0"})
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags["funnel/shard"] == "0"
        assert instance.all_logs(result.run_id)
    finally:
        instance.dispose()
