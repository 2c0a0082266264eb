"""Process and port primitives of the local stack (Linux: process checks read `/proc`):
start, find, stop and log child processes, free ports, URLs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx

T = TypeVar("T")
STOP_GRACE_SECONDS = 10.0

# Children started by this process, kept so they are reaped (no zombies, no ResourceWarning).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

Log = Callable[[str], None]


# --------------------------------------------------------------------------- processes


def gone(pid: int) -> bool:
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


def alive(pid: int | None, name: str) -> bool:
    """True if `pid` runs a program called `name` (guards against recycled pids)."""
    if not pid or not name or gone(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return False
    return os.path.basename(argv0.split(" ")[0]) == name


def terminate(pid: int | None, name: str) -> bool:
    """SIGTERM `pid` (if it runs `name`), SIGKILL after a grace period; wait until it is gone.

    Returns whether it was running.
    """
    if pid is None or not alive(pid, name):
        return False
    for sig, wait in ((signal.SIGTERM, STOP_GRACE_SECONDS), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if gone(pid):
                return True
            time.sleep(0.1)
    return True


def spawn(
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


def log_tail(log_file: Path, lines: int = 20) -> str:
    """The last `lines` lines of a log file, or "(no log)"."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def apt_install(package: str, log: Log) -> None:
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


def port_free(port: int) -> bool:
    """True if 127.0.0.1:`port` can be bound (nobody listens on it, on any address)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")).geturl()


def tcp_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.5,
             message: str = "condition", *, tolerate_errors: bool = False) -> T:
    """Call `predicate` until it returns a truthy value (returned) or `timeout` seconds pass
    (TimeoutError). Exceptions raised by `predicate` propagate, unless `tolerate_errors`
    (a service coming up answers with errors meanwhile): then only the last one does, when
    the time is up."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            if not tolerate_errors or time.monotonic() >= deadline:
                raise
            value = None
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{message} not met within {timeout:.0f} s")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc): those of each of its threads (a child started
    from another thread than the main one is listed under that thread)."""
    try:
        return [int(p) for task in Path(f"/proc/{pid}/task").iterdir()
                for p in (task / "children").read_text().split()]
    except (OSError, ValueError):
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
        return out


def descendants(pid: int) -> list[int]:
    seen: list[int] = []
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            if child not in seen:
                seen.append(child)
                todo.append(child)
    return seen


def rss_mb(pids: list[int]) -> float:
    """The resident memory of `pids` together, in MiB (those gone count 0)."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def signal_quietly(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks since boot), None when it is gone or a zombie:
    with the pid it identifies one process even if the pid is reused later."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def start_api(env: dict[str, str], port: int, log_file: Path,
              workers: int | None = None) -> subprocess.Popen:
    """Start the API (`funnel api`) as a child process and wait until /readyz answers 200.
    `workers`: else API_WORKERS of `env` or the environment, else 1. The child is granian's
    supervisor, its workers are its children: signal the process group to stop them all."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, **env}
    child_env["API_WORKERS"] = str(workers or child_env.get("API_WORKERS") or 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "funnel_ingest.cli", "api", "--host", "127.0.0.1",
         "--port", str(port)],
        env=child_env, stdout=log_file.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with {proc.returncode}; see {log_file}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_process_group(proc)  # the supervisor and the workers it started
    raise RuntimeError(f"the API did not become ready in 60 s; see {log_file}")


def api_worker_pids(proc: subprocess.Popen) -> list[int]:
    """The serving processes of an API started by `start_api`: granian's workers, the
    children of the supervisor `proc` (what to measure memory or CPU of)."""
    return children(proc.pid)


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to `proc`'s process group (start_api and the local Dagster start one each),
    SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
