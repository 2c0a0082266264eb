"""Shared set-up of the benchmarks: the local stack, throwaway databases on it, and for the ingest
benchmarks an API process, the load-generator process and CPU accounting from /proc."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from funnel_ingest import db
from funnel_ingest.local import stack  # noqa: E402


def stack_env(quiet: bool = False) -> dict[str, str]:
    """`funnel up` (idempotent) and the stack's settings."""
    return dict(stack.up(log=(lambda m: None) if quiet else
                         (lambda m: print(m, file=sys.stderr))))


def fresh_database(env: dict[str, str], name: str, *also_drop: str) -> str:
    """Drop `name` (and `also_drop`), create it on the stack's server, migrate it; its URL."""
    base = env["DATABASE_URL"].rsplit("/", 1)[0]
    for db_name in (name, *also_drop):
        db.drop_database(f"{base}/{db_name}")
    url = f"{base}/{name}"
    db.ensure_database(url)
    db.migrate(url)
    return url


def redis_db(env: dict[str, str], number: int) -> str:
    """The stack's Redis URL with another database number."""
    return env["REDIS_URL"].rsplit("/", 1)[0] + f"/{number}"


# --------------------------------------------------------------------------- ingest benchmarks

BENCH_REDIS_DB = 12
BENCH_BUCKET = "funnel-bench-raw"


def ingest_env(quiet: bool = False) -> dict[str, str]:
    """The stack's settings with the ingest benchmarks' own Redis db and raw bucket."""
    from funnel_ingest import s3
    from funnel_ingest.settings import Settings

    env = stack_env(quiet)
    env.update(REDIS_URL=redis_db(env, BENCH_REDIS_DB), RAW_BUCKET=BENCH_BUCKET,
               LOG_LEVEL="WARNING")
    s3.ensure_buckets(Settings(**{k.lower(): v for k, v in env.items()}))
    return env


def default_workers() -> int:
    """What `funnel api` runs: API_WORKERS, else one worker per usable CPU."""
    return int(os.environ.get("API_WORKERS") or len(os.sched_getaffinity(0)))


@contextmanager
def api_server(env: dict[str, str], workers: int, log_name: str = "bench-api.log"):
    """`funnel api` with `workers` granian workers as a child process; yields (url, Popen)."""
    from funnel_ingest.local.processes import free_port, start_api

    port = free_port()
    proc = start_api(env, port, stack.state_dir() / "logs" / log_name, workers=workers)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # granian's supervisor and its workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def loadgen(url: str, env: dict[str, str], **opts: object) -> dict:
    """Run bench/loadgen.py as its own process; its JSON result."""
    cmd = [sys.executable, str(ROOT / "bench" / "loadgen.py"), "--url", url]
    for k, v in opts.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    out = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants."""
    from funnel_ingest.local.processes import descendants
    return [pid, *descendants(pid)]


def pids_named(name: str, port: int) -> list[int]:
    """Processes called `name` whose command line mentions `port` (the stack's server, not a
    test's private one)."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if ((entry / "comm").read_text().strip() == name
                        and f"{port}" in (entry / "cmdline").read_bytes().decode(errors="replace")):
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of `pids` (the ones still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / _TICK, sum(values[:8]) / _TICK


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its descendants together (worker processes
    included), sampled every 50 ms until `stop()`."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_mb = pid, 0.0
        self._stopped = threading.Event()
        self.start()

    def run(self) -> None:
        from funnel_ingest.local.processes import rss_mb
        while not self._stopped.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb(process_tree(self.pid)))
            self._stopped.wait(0.05)

    def stop(self) -> float:
        """Stop sampling; the peak in MiB."""
        self._stopped.set()
        self.join()
        return self.peak_mb
