"""A local Dagster (webserver + daemon) on this machine, without Docker.

    env = dagster_env(stack_env, state_dir)            # DAGSTER_HOME + DAGSTER_PG_* + the stack
    with LocalDagster(env, state_dir) as dagster:      # webserver and daemon, ready
        print(dagster.base_url)                        # http://127.0.0.1:<port>

The instance is the repo's `dagster.yaml` (copied into `DAGSTER_HOME`): Postgres storage read
from `DAGSTER_PG_*`, which `dagster_env` derives from `DATABASE_URL`. Dagster's tables live in
their own database next to the funnel's, `<funnel database>_dagster` by default (e.g.
`funnel_dagster`), so wiping or re-creating the funnel database never touches run history and
vice versa; pass `pg_db=` to choose another (tests use a throwaway one).

Both processes run from the repo root with `-w workspace.yaml`, in their own process groups,
logging to `<state_dir>/logs/dagster-webserver.log` and `dagster-daemon.log`. `stop()` (also on
leaving the `with` block, and when start-up fails) sends SIGTERM to each group and to every
descendant (the code servers and run workers they spawned), then SIGKILL after a grace period.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self
from urllib.parse import quote

import httpx
import psycopg

from funnel_ingest.local.processes import (
    descendants,
    free_port,
    log_tail,
    signal_quietly,
    start_time,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER_YAML = REPO_ROOT / "dagster.yaml"
WORKSPACE_YAML = REPO_ROOT / "workspace.yaml"

START_TIMEOUT = 120.0
STOP_GRACE_SECONDS = 15.0


_DAEMON_QUERY = """
query LocalDagsterStatus {
  instance {
    daemonHealth {
      allDaemonStatuses {
        daemonType required healthy lastHeartbeatTime lastHeartbeatErrors { message }
      }
    }
  }
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        loadStatus
        locationOrLoadError {
          __typename
          ... on PythonError { message stack }
        }
      }
    }
  }
}
"""


_LAUNCH_RUN = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
_LAUNCH_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
_BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions error { message } }
    ... on PythonError { message }
  }
}
"""
_RUN_FIELDS = "runId status jobName tags { key value }"
_RUN = f"""
query Run($id: ID!) {{
  runOrError(runId: $id) {{ __typename ... on Run {{ {_RUN_FIELDS} }} }}
}}
"""
_RUNS = f"""
query Runs($filter: RunsFilter) {{
  runsOrError(filter: $filter) {{ __typename ... on Runs {{ results {{ {_RUN_FIELDS} }} }} }}
}}
"""
_SCHEDULE_DRY_RUN = """
mutation DryRun($selector: ScheduleSelector!, $timestamp: Float) {
  scheduleDryRun(selectorData: $selector, timestamp: $timestamp) {
    __typename
    ... on DryRunInstigationTick {
      evaluationResult {
        runRequests { runKey runConfigYaml tags { key value } }
        skipReason
        error { message }
      }
    }
    ... on PythonError { message }
  }
}
"""
_SCHEDULE = """
query Schedule($selector: ScheduleSelector!) {
  scheduleOrError(scheduleSelector: $selector) { ... on Schedule { pipelineName } }
}
"""
_SENSOR_TICKS = """
query Ticks($selector: SensorSelector!, $limit: Int) {
  sensorOrError(sensorSelector: $selector) {
    ... on Sensor { sensorState { ticks(limit: $limit) { status skipReason runIds } } }
  }
}
"""






def default_dagster_db(database_url: str) -> str:
    """`<funnel database>_dagster`: Dagster's storage database next to the funnel's."""
    funnel_db = psycopg.conninfo.conninfo_to_dict(database_url).get("dbname") or "funnel"
    return f"{funnel_db}_dagster"


DAGSTER_VARS = ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USERNAME",
                "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def dagster_home(state_dir: Path) -> Path:
    """The local Dagster instance's home under a stack state dir."""
    return Path(state_dir) / "dagster"


def dagster_vars(database_url: str, state_dir: Path, *, pg_db: str | None = None
                 ) -> dict[str, str]:
    """`DAGSTER_HOME=<state_dir>/dagster` and `DAGSTER_PG_HOST/PORT/USERNAME/PASSWORD/DB` derived
    from the funnel's `database_url` (what the repo's dagster.yaml reads). The database is
    `pg_db`, default `<funnel db>_dagster`. Nothing is created."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    host = str(info.get("host") or "127.0.0.1")
    if host.startswith("/"):  # a Unix socket dir: dagster-postgres builds a TCP URL
        host = "127.0.0.1"
    return {
        "DAGSTER_HOME": str(dagster_home(state_dir)),
        "DAGSTER_PG_HOST": host,
        "DAGSTER_PG_PORT": str(info.get("port") or 5432),
        "DAGSTER_PG_USERNAME": str(info.get("user") or os.environ.get("PGUSER") or "postgres"),
        "DAGSTER_PG_PASSWORD": str(info.get("password") or ""),
        "DAGSTER_PG_DB": pg_db or default_dagster_db(database_url),
    }


def prepare_home(home: Path) -> None:
    """Create the Dagster home with the repo's dagster.yaml in it (refreshed each time)."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DAGSTER_YAML, home / "dagster.yaml")
    # The UI's "join the community" dialog on localhost, marked as seen (it would cover the page)
    (home / ".nux").mkdir(exist_ok=True)
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")


def dagster_env(env: dict[str, str], state_dir: Path, *, pg_db: str | None = None,
                create_db: bool = True) -> dict[str, str]:
    """`env` plus what a local Dagster needs (`dagster_vars`), with the home prepared and the
    storage database created when missing (unless `create_db=False`). The derived names
    override any in `env`."""
    from funnel_ingest import db

    out = {**env, **dagster_vars(env["DATABASE_URL"], state_dir, pg_db=pg_db)}
    prepare_home(Path(out["DAGSTER_HOME"]))
    if create_db:
        db.ensure_database(psycopg.conninfo.make_conninfo(env["DATABASE_URL"],
                                                          dbname=out["DAGSTER_PG_DB"]))
    return out










def _command(script: str, module: str) -> list[str]:
    """The console script installed next to this interpreter (the venv's), else `python -m`."""
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


class LocalDagster:
    """dagster-webserver and dagster-daemon for the repo's workspace, as detached subprocesses.

    `env` is the full environment for both (see `dagster_env`), on top of `os.environ`.
    Ready when `/server_info` answers, the code location is loaded (a load error raises with
    Dagster's traceback) and every required daemon reports healthy.
    """

    def __init__(self, env: dict[str, str], state_dir: Path, *, port: int | None = None,
                 host: str = "127.0.0.1", workspace: Path = WORKSPACE_YAML,
                 start_timeout: float = START_TIMEOUT) -> None:
        if "DAGSTER_HOME" not in env:
            raise ValueError("env has no DAGSTER_HOME: build it with dagster_env()")
        self.env = {**os.environ, **env}
        self.state_dir = Path(state_dir)
        self.log_dir = self.state_dir / "logs"
        self.host = host
        self.port = port or free_port()
        self.workspace = Path(workspace)
        self.start_timeout = start_timeout
        self.base_url = f"http://{host}:{self.port}"
        self.webserver_log = self.log_dir / "dagster-webserver.log"
        self.daemon_log = self.log_dir / "dagster-daemon.log"
        self.webserver: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        # descendants seen while running (pid -> start time), stopped with their parents
        self._known: dict[int, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _spawn(self, args: list[str], log_file: Path) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            return subprocess.Popen(
                args, cwd=REPO_ROOT, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)

    def _spawn_daemon(self) -> subprocess.Popen[bytes]:
        return self._spawn([*_command("dagster-daemon", "dagster._daemon"), "run", "-w",
                            str(self.workspace)], self.daemon_log)

    def start(self) -> Self:
        """Start both processes and wait until they are ready (stopping them on failure)."""
        ws = str(self.workspace)
        self.started_at = time.time()
        try:
            self.webserver = self._spawn(
                [*_command("dagster-webserver", "dagster_webserver"),
                 "-h", self.host, "-p", str(self.port), "-w", ws], self.webserver_log)
            self.daemon = self._spawn_daemon()
            self.wait_ready(self.start_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def restart_daemon(self, sig: int = signal.SIGKILL, *, whole_group: bool = False) -> None:
        """Kill the daemon with `sig` (SIGKILL: no clean shutdown, as a crash or an OOM kill)
        and start a new one; returns once it is healthy. With `whole_group`, everything the
        daemon started (its code server and their run workers) is killed with it, as when its
        container or machine dies; otherwise those are left running, as after a crash of the
        daemon alone, and stopped by `stop()`."""
        self._remember_descendants()
        if self.daemon is not None and self.daemon.poll() is None:
            if whole_group:
                try:
                    os.killpg(self.daemon.pid, sig)  # pgid == pid (start_new_session)
                except ProcessLookupError:
                    pass
            else:
                signal_quietly(self.daemon.pid, sig)
            self.daemon.wait(30)
        self.daemon = self._spawn_daemon()
        self.started_at = time.time()
        self.wait_ready(self.start_timeout)

    def _check_running(self) -> None:
        for name, proc, log in (("dagster-webserver", self.webserver, self.webserver_log),
                                ("dagster-daemon", self.daemon, self.daemon_log)):
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; log {log}:\n"
                                   f"{log_tail(log)}")

    def wait_ready(self, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Wait for /server_info, the loaded code location and healthy daemons; returns the
        last status answer."""
        def server_up() -> bool:
            self._check_running()
            try:
                return httpx.get(f"{self.base_url}/server_info", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        deadline = time.monotonic() + timeout
        wait_for(server_up, timeout, 0.3, f"dagster-webserver answering on {self.base_url}")
        last: dict[str, Any] = {}

        def ready() -> bool:
            nonlocal last
            self._check_running()
            self._remember_descendants()
            last = self.status()
            for entry in last["locations"]:
                err = entry.get("locationOrLoadError") or {}
                if err.get("__typename") == "PythonError":
                    raise RuntimeError(f"code location {entry['name']} failed to load:\n"
                                       f"{err.get('message')}{''.join(err.get('stack') or [])}")
            loaded = bool(last["locations"]) and all(
                e["loadStatus"] == "LOADED" for e in last["locations"])
            # healthy, and by our daemon (not a heartbeat left in the storage by an earlier one)
            daemons = [d for d in last["daemons"] if d["required"]]
            healthy = bool(daemons) and all(
                d["healthy"] and (d["lastHeartbeatTime"] or 0) >= self.started_at
                for d in daemons)
            return loaded and healthy

        try:
            wait_for(ready, max(1.0, deadline - time.monotonic()), 0.5,
                     "code location loaded and daemons healthy")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; last status {last}; daemon log {self.daemon_log}:\n"
                               f"{log_tail(self.daemon_log)}") from None
        return last

    def status(self) -> dict[str, Any]:
        """Daemon health and code-location load state, from the webserver's GraphQL API."""
        data = self.graphql(_DAEMON_QUERY)
        daemons = data["instance"]["daemonHealth"]["allDaemonStatuses"]
        ws = data["workspaceOrError"]
        return {"daemons": daemons,
                "locations": ws.get("locationEntries", []) if ws["__typename"] == "Workspace"
                else []}

    def graphql(self, query: str, variables: dict[str, Any] | None = None,
                timeout: float = 10) -> dict[str, Any]:
        """POST a GraphQL query to the webserver; its `data` (raises on GraphQL errors)."""
        r = httpx.post(f"{self.base_url}/graphql", json={"query": query,
                                                         "variables": variables or {}},
                       timeout=timeout)
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def asset_groups(self) -> list[str]:
        """The asset group names of the loaded code location(s)."""
        data = self.graphql("query AssetGroups { assetNodes { groupName } }")
        return sorted({n["groupName"] for n in data["assetNodes"] if n.get("groupName")})

    def lineage_url(self, groups: list[str] | None = None) -> str:
        """The UI's global asset lineage page (`/asset-groups`) with `groups` (default: all)
        expanded, so every asset shows as a node (collapsed groups show only their name). The
        group ids are `global@global:<group>` unless the browser enables Dagster's
        "asset graph groups per code location" flag."""
        names = self.asset_groups() if groups is None else groups
        if not names:
            return f"{self.base_url}/asset-groups"
        expanded = ",".join(f"global@global:{g}" for g in names)
        return f"{self.base_url}/asset-groups?expanded={quote(expanded, safe='')}"

    # ------------------------------------------------------------------ launching, as the UI does

    LOCATION = "funnel_dagster"
    REPOSITORY = "__repository__"  # the name Dagster gives a code location's Definitions

    def _selector(self, **extra: Any) -> dict[str, Any]:
        return {"repositoryLocationName": self.LOCATION, "repositoryName": self.REPOSITORY,
                **extra}

    def launch_run(self, job: str, *, assets: list[str] | None = None,
                   checks: list[tuple[str, str]] | None = None,
                   run_config: dict[str, Any] | str | None = None,
                   tags: dict[str, str] | None = None) -> str:
        """Launch a run of `job` (e.g. `__ASSET_JOB` with `assets`, as the UI's Materialize
        button does) through the webserver; its run id. The daemon's queue starts it."""
        selector = self._selector(jobName=job)
        if assets is not None:
            selector["assetSelection"] = [{"path": a.split("/")} for a in assets]
        if checks is not None:
            selector["assetCheckSelection"] = [{"assetKey": {"path": a.split("/")}, "name": n}
                                               for a, n in checks]
        params: dict[str, Any] = {
            "selector": selector, "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v}
                                           for k, v in (tags or {}).items()]}}
        data = self.graphql(_LAUNCH_RUN, {"params": params})["launchRun"]
        if data["__typename"] != "LaunchRunSuccess":
            raise RuntimeError(f"launchRun {job}: {data}")
        return data["run"]["runId"]

    def launch_backfill(self, assets: list[str], partitions: list[str],
                        tags: dict[str, str] | None = None) -> str:
        """Launch an asset backfill of `partitions` of `assets` (the UI's "Materialize
        selected" on a partition range); its backfill id."""
        params = {"assetSelection": [{"path": a.split("/")} for a in assets],
                  "partitionNames": partitions, "fromFailure": False,
                  "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        data = self.graphql(_LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if data["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"launchPartitionBackfill: {data}")
        return data["backfillId"]

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        return self.graphql(_BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]

    def run(self, run_id: str) -> dict[str, Any]:
        """`runId`, `status`, `jobName` and `tags` ({key: value}) of a run."""
        data = self.graphql(_RUN, {"id": run_id})["runOrError"]
        if data["__typename"] != "Run":
            raise RuntimeError(f"run {run_id}: {data}")
        return {**data, "tags": {t["key"]: t["value"] for t in data["tags"]}}

    def runs(self, **tags: str) -> list[dict[str, Any]]:
        """The runs carrying every tag given, newest first (`runs(**{"dagster/backfill":
        id})`)."""
        flt = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        data = self.graphql(_RUNS, {"filter": flt})["runsOrError"]
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}}
                for r in data.get("results", [])]

    def wait_run(self, run_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the run has finished; the run (any final status)."""
        final = {"SUCCESS", "FAILURE", "CANCELED"}
        return wait_for(lambda: (run := self.run(run_id))["status"] in final and run, timeout,
                        0.5, f"run {run_id} finished")

    def schedule_dry_run(self, schedule: str, timestamp: float | None = None) -> dict[str, Any]:
        """Evaluate a schedule (the UI's "Test schedule"): its run requests, skip reason or
        error."""
        data = self.graphql(_SCHEDULE_DRY_RUN, {
            "selector": self._selector(scheduleName=schedule),
            "timestamp": timestamp or time.time()}, timeout=60)["scheduleDryRun"]
        if data["__typename"] != "DryRunInstigationTick":
            raise RuntimeError(f"scheduleDryRun {schedule}: {data}")
        return data["evaluationResult"]

    def schedule_job(self, schedule: str) -> str:
        data = self.graphql(_SCHEDULE, {"selector": self._selector(scheduleName=schedule)})
        return data["scheduleOrError"]["pipelineName"]

    def sensor_ticks(self, sensor: str, limit: int = 20) -> list[dict[str, Any]]:
        data = self.graphql(_SENSOR_TICKS, {"selector": self._selector(sensorName=sensor),
                                            "limit": limit})["sensorOrError"]
        return data["sensorState"]["ticks"]

    def _remember_descendants(self) -> None:
        for proc in (self.webserver, self.daemon):
            if proc is not None and proc.poll() is None:
                for pid in descendants(proc.pid):
                    started = start_time(pid)
                    if started is not None:
                        self._known.setdefault(pid, started)

    def _known_alive(self) -> list[int]:
        """Remembered descendants still running (same pid and start time)."""
        return [pid for pid, started in self._known.items() if start_time(pid) == started]

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop both processes and everything they started. Idempotent.

        SIGTERM to the daemon and the webserver first, so they shut their code servers down
        themselves; after `grace` seconds SIGTERM to their process groups and to every
        descendant seen while running (code servers, run workers), and SIGKILL to whatever
        is still there a few seconds later."""
        self._remember_descendants()
        procs = [p for p in (self.daemon, self.webserver) if p is not None]
        for proc in procs:
            if proc.poll() is None:
                signal_quietly(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 0.0)):
            if not any(p.poll() is None for p in procs) and not self._known_alive():
                break
            for proc in procs:
                try:
                    os.killpg(proc.pid, sig)  # pgid == pid (start_new_session)
                except (ProcessLookupError, PermissionError):
                    pass
            for pid in self._known_alive():
                signal_quietly(pid, sig)
            limit = time.monotonic() + wait
            while time.monotonic() < limit and (
                    any(p.poll() is None for p in procs) or self._known_alive()):
                time.sleep(0.1)
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._known.clear()

    @property
    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.webserver, self.daemon))

