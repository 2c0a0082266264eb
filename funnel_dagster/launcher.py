"""The instance's run launcher: Dagster's DefaultRunLauncher plus a run-worker health check.

With the DefaultRunLauncher a run worker is a process on the machine of the code server that
launched it. When that process dies without reporting (SIGKILL, the OOM killer, a machine
restart), the run stays STARTED: Dagster's run monitoring only fails such runs when the
launcher can tell whether its worker is alive, and the DefaultRunLauncher cannot. A STARTED
drain run that never finishes holds its shard's `funnel/shard` concurrency slot, so that
shard's stream would never be drained again.

`MonitoredRunLauncher` answers the check from the process table: the worker's pid is the one
the worker logged when it started ("Started process for run (pid: N)"), or, for runs the
`funnel` CLI executes in its own process, the pid in the run's `funnel/worker_pid` tag (with
`funnel/worker_host`). The worker is alive when that pid exists on this machine, is not a
zombie and started before it logged its pid (a reused pid belongs to a later process). A
worker on another machine (a code server in another container, `GRPC_INFO_TAG` naming a
remote host) or one with no recorded pid is reported running: the check never fails a run it
cannot see. With `run_monitoring` enabled in dagster.yaml the daemon then marks a run whose
worker is gone as failed within `poll_interval_seconds`, which frees the shard and lets the
stream sensor hand the range out again.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG

PID_TAG = "funnel/worker_pid"
HOST_TAG = "funnel/worker_host"
_STARTED = "Started process for run"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}


def worker_tags() -> dict[str, str]:
    """Tags for a run executed in the current process (e.g. by the CLI)."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}


def _boot_time() -> float | None:
    """When the machine booted (epoch seconds), to the hundredth: now minus the uptime (the
    `btime` of /proc/stat is truncated to the second, which made a process started 2.5 s after
    a run look as if started 1.7 s after it)."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return time.time() - uptime


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds); None when it does not exist or is a zombie.
    Without /proc (not Linux): the current time if the process exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return 0.0
    if fields[0] in ("Z", "X"):
        return None
    boot = _boot_time()
    if boot is None:
        return 0.0
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


class MonitoredRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers the daemon's run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def _worker(self, run: DagsterRun) -> tuple[int, float] | str:
        """(pid, the time it was recorded) of the run's worker on this machine, or why it
        cannot be checked here."""
        if PID_TAG in run.tags:
            if run.tags.get(HOST_TAG) != socket.gethostname():
                return f"worker on {run.tags.get(HOST_TAG)}, not this machine"
            record = self._instance.get_run_record_by_id(run.run_id)
            created = record.create_timestamp.timestamp() if record else float("inf")
            return int(run.tags[PID_TAG]), created
        grpc = json.loads(run.tags.get(GRPC_INFO_TAG, "{}") or "{}")
        if grpc.get("host") and grpc["host"] not in _LOCAL_HOSTS and not grpc.get("socket"):
            return f"worker launched by the code server at {grpc['host']}"
        for entry in reversed(self._instance.all_logs(
                run.run_id, of_type=DagsterEventType.ENGINE_EVENT)):
            if entry.message and entry.message.startswith(_STARTED) and entry.dagster_event:
                pid = entry.dagster_event.engine_event_data.metadata.get("pid")
                if pid is not None:
                    return int(pid.value), entry.timestamp
        return "no worker pid recorded"

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        found = self._worker(run)
        if isinstance(found, str):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"not checked: {found}")
        pid, recorded_at = found
        started = process_started_at(pid)
        if started is None:
            return CheckRunHealthResult(WorkerStatus.FAILED,
                                        f"run worker process {pid} is gone")
        if started > recorded_at + 2.0:  # the pid was reused by a later process
            return CheckRunHealthResult(WorkerStatus.FAILED,
                                        f"run worker process {pid} is gone (pid reused)")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker process {pid} is alive")
