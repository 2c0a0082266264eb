"""Fault-injection harness: a private stack of real processes on loopback.

`FaultStack` runs its own PostgreSQL cluster (initdb + pg_ctl), redis-server and S3 server, the
API (`funnel api`) and a `funnel drain --follow` processor, each of which a test may kill, stop or
restart; the shared services are never touched. `Plan` is a simulated day of provider webhooks
and the funnel the engine makes of exactly those messages in one batch (the reference);
`FaultStack.verify` compares the stack's funnel with it and counts lost and duplicated
messages.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import redis

from funnel_ingest import db, s3
from funnel_ingest.ingest.providers import parse
from funnel_ingest.local import s3_server
from funnel_ingest.local.postgres_server import as_postgres, pg_bin_dir
from funnel_ingest.local.processes import free_port, start_api, wait_for
from funnel_ingest.settings import Settings
from funnel_ingest.simulate.conversations import simulate
from funnel_ingest.simulate.sender import headers_for
from funnel_ingest.simulate.webhooks import ROUTES, Sample, to_webhooks
from funnel_ingest.store.funnel import process_messages, store_statuses
from funnel_ingest.store.keywords import current_classifier
from tests.support import start_redis_server

ROOT = Path(__file__).resolve().parents[2]
FUNNEL = str(Path(sys.executable).parent / "funnel")
PG_BIN = Path(os.environ.get("PG_BIN") or pg_bin_dir() or "/usr/lib/postgresql/15/bin")

SECRETS = {
    "WHATSAPP_APP_SECRET": "fault-app-secret",
    "WHATSAPP_VERIFY_TOKEN": "fault-verify",
    "WEBHOOK_TOKEN": "fault-token",
    "WEBHOOK_HMAC_SECRET": "",
    "API_KEY": "fault-api-key",
}

# What a lead is, compared between the stack and the reference (no timestamps of processing).
FUNNEL_COLUMNS = ("lead_id, leads_date, channel, phone, booking_date, transaction_date, "
                  "transaction_value, transaction_total, transactions, customer_key, cycle")


# A message is stored once per room it belongs to (the unique key is source, id, room).
ROWS_PER_MESSAGE = ("SELECT source, message_id, count(*) FROM classified_messages "
                    "GROUP BY source, message_id")






# ---------------------------------------------------------------------------------------------
# The plan: webhooks and their reference funnel


@dataclass
class Plan:
    samples: list[Sample]
    keys: list[set[tuple[str, str]]]    # (source, message_id) of each sample's messages
    reference: set[tuple]                # funnel rows of all the messages, in one batch
    statuses: int
    rows: dict[tuple[str, str], int]     # classified_messages rows per (source, message_id)

    @property
    def message_keys(self) -> set[tuple[str, str]]:
        return set().union(*self.keys)


def build_plan(customers: int, seed: int, database_url: str) -> Plan:
    """Two days of simulated chats as provider webhooks (with the provider's own redeliveries),
    and the funnel of all their messages processed in one batch in a fresh database."""
    start = datetime.now(timezone.utc) - timedelta(days=2, hours=1)
    sim = simulate(customers, seed=seed, start=start, days=2)
    samples = list(to_webhooks(sim.deliveries(seed=seed), seed=seed))
    keys, messages, statuses = [], {}, {}
    for sample in samples:
        part = parse(sample.source, sample.body)
        keys.append({(m.source, m.message_id) for m in part.messages})
        for m in part.messages:
            messages[(m.source, m.message_id, m.room_key)] = m
        for st in part.statuses:
            statuses[(st.source, st.message_id, st.status)] = st
    settings = Settings(database_url=database_url)
    with psycopg.connect(database_url) as conn:
        classifier = current_classifier(conn, None, settings)
        process_messages(conn, list(messages.values()), classifier,
                         rules=settings.cycle_rules)
        store_statuses(conn, list(statuses.values()))
        conn.commit()
        reference = funnel_rows(conn)
        rows = dict(((s, m), n) for s, m, n in conn.execute(ROWS_PER_MESSAGE))
    return Plan(samples, keys, reference, len(statuses), rows)


def funnel_rows(conn: psycopg.Connection) -> set[tuple]:
    return set(conn.execute(f"SELECT {FUNNEL_COLUMNS} FROM funnel").fetchall())


def write_deliveries(path: Path, samples: list[Sample], order: list[int],
                     env: dict[str, str]) -> None:
    """The loader's input: one line per delivery (an index into `samples`)."""
    with path.open("w") as f:
        for i in order:
            s = samples[i]
            f.write(json.dumps({"i": i, "path": ROUTES[s.source], "headers": headers_for(s, env),
                                "body": base64.b64encode(s.body).decode()}) + "\n")


# ---------------------------------------------------------------------------------------------
# The stack


@dataclass
class FaultRow:
    fault: str
    sent: int            # distinct webhooks sent
    acked: int           # of those, acknowledged (2xx) at least once
    messages: int        # distinct messages in the acknowledged webhooks
    stored: int          # of those, stored in Postgres
    lost: int            # acknowledged but not stored
    duplicated: int      # stored more than once, plus leads/payments beyond the reference
    funnel_equal: bool
    deliveries: int = 0  # requests made, retries included
    refused: int = 0     # answers other than 2xx (503 during the fault), connection errors
    notes: str = ""


@dataclass
class LoadResult:
    acked: set[int]
    deliveries: int
    codes: dict[str, int]
    seconds: float


@dataclass
class FaultStack:
    root: Path
    pg_port: int = 0
    redis_port: int = 0
    s3_port: int = 0
    api_port: int = 0
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    extra_env: dict[str, str] = field(default_factory=dict)   # settings of this test's API
    started_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    # -- services ------------------------------------------------------------------------
    def start(self) -> FaultStack:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.start_postgres(init=True)
        self.start_redis()
        self.s3_port = s3_server.free_s3_port()
        self.start_s3()
        db.ensure_database(self.env["DATABASE_URL"])
        db.migrate(self.env["DATABASE_URL"])
        s3.ensure_buckets(self.settings)
        return self

    @property
    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{self.pg_port}/funnel",
            "REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "S3_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}",
            "S3_ACCESS_KEY_ID": "fault", "S3_SECRET_ACCESS_KEY": "fault-secret",
            "S3_REGION": "us-east-1", "RAW_BUCKET": "funnel-raw",
            "REPORTS_BUCKET": "funnel-reports", "FUNNEL_TIMEZONE": "Asia/Jakarta",
            "STREAM_SHARDS": "1", "KEYWORDS_CSV": "", "GSHEET_KEY": "", "LOG_LEVEL": "INFO",
            "API_WORKERS": "1", **SECRETS, **self.extra_env,
        }

    @property
    def settings(self) -> Settings:
        return Settings(**{k.lower(): v for k, v in self.env.items()})

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _child_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        return {**env, **self.env, "PYTHONPATH": str(ROOT)}

    def _log(self, name: str):
        return (self.root / "logs" / f"{name}.log").open("ab")

    def start_postgres(self, init: bool = False) -> None:
        if init:
            # a directory the postgres user can enter (pytest's tmp dirs are private to root)
            self.pg_dir = Path(tempfile.mkdtemp(prefix="funnel-fault-pg-"))
            if os.geteuid() == 0:
                shutil.chown(self.pg_dir, "postgres")
            subprocess.run(as_postgres([str(PG_BIN / "initdb"), "-D", str(self.pg_dir / "data"),
                                        "-A", "trust", "-U", "postgres", "--no-sync",
                                        "-E", "UTF8"]),
                           check=True, capture_output=True)
            self.pg_port = free_port()
        data = self.pg_dir / "data"
        subprocess.run(
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-w", "-t", "30",
                         "-l", str(self.pg_dir / "server.log"), "-o",
                         f"-p {self.pg_port} -k {self.pg_dir} -c listen_addresses=127.0.0.1 "
                         "-c fsync=off", "start"]), check=True, capture_output=True)

    def stop_postgres(self, mode: str = "immediate") -> None:
        """`immediate`: the server processes exit at once, as on a crash (recovery at start)."""
        subprocess.run(as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.pg_dir / "data"),
                                    "-m", mode, "-w", "stop"]),
                       check=True, capture_output=True)

    def start_redis(self) -> None:
        """A redis-server keeping nothing on disk: a restart comes back empty."""
        self.redis_port = self.redis_port or free_port()
        self.procs["redis"] = start_redis_server(self.redis_port, self.root, self._log("redis"))

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig) if name in ("api", "drainer") else proc.send_signal(sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def start_s3(self) -> None:
        self.procs["s3"] = s3_server.start_s3_server(self.root / "s3", self.s3_port, "fault",
                                                 "fault-secret", self.root / "logs" / "s3.log")
        s3_server.wait_s3_ready(self.env["S3_ENDPOINT_URL"], "fault", "fault-secret", timeout=60)

    # -- our processes -------------------------------------------------------------------
    def start_api(self) -> None:
        """`funnel api` (one worker), ready when /readyz answers 200."""
        self.api_port = self.api_port or free_port()
        self.procs["api"] = start_api(self._child_env(), self.api_port,
                                      self.root / "logs" / "api.log")

    def start_drainer(self, batch_size: int = 500) -> None:
        self.procs["drainer"] = subprocess.Popen(
            [FUNNEL, "drain", "--follow", "--interval", "0.5",
             "--batch-size", str(batch_size)],
            env=self._child_env(), stdout=self._log("drainer"), stderr=subprocess.STDOUT,
            start_new_session=True, cwd=ROOT)
        log = self.root / "logs" / "drainer.log"
        wait_for(lambda: b"following the streams" in log.read_bytes(), 120, 0.1,
                 "the drainer following the streams", tolerate_errors=True)

    def funnel(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run a `funnel` command against this stack."""
        return subprocess.run([FUNNEL, *args],
                              env=self._child_env(), capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)

    def load(self, deliveries: Path, *, rate: float, retry_for: float = 90,
             concurrency: int = 64) -> subprocess.Popen:
        """Start the load generator (a separate process) on the deliveries file."""
        out = deliveries.with_suffix(".result.json")
        return subprocess.Popen(
            [sys.executable, "-m", "tests.faults.loader", "--url", self.api_url,
             "--deliveries", str(deliveries), "--out", str(out), "--rate", str(rate),
             "--retry-for", str(retry_for), "--concurrency", str(concurrency)],
            env=self._child_env(), stdout=self._log("loader"), stderr=subprocess.STDOUT,
            cwd=ROOT)

    @staticmethod
    def load_result(loader: subprocess.Popen, deliveries: Path, timeout: float = 180) -> LoadResult:
        assert loader.wait(timeout=timeout) == 0, "the load generator failed (see its log)"
        data = json.loads(deliveries.with_suffix(".result.json").read_text())
        return LoadResult(set(data["acked"]), data["deliveries"], data["codes"], data["seconds"])

    def streams_backlog(self) -> int:
        r = redis.Redis(port=self.redis_port)
        s = self.settings
        return sum(r.xlen(k) for k in (*s.stream_keys(), s.status_stream, s.deadletter_stream))

    def wait_drained(self, timeout: float = 120) -> None:
        """Until every stream is empty (the drainer trims what it committed)."""
        wait_for(lambda: self.streams_backlog() == 0, timeout, 0.2, "the streams drained",
                 tolerate_errors=True)

    def stop(self) -> None:
        for name in list(self.procs):
            self.kill(name)
        if getattr(self, "pg_dir", None):
            try:
                self.stop_postgres("immediate")
            except subprocess.CalledProcessError:
                pass
            shutil.rmtree(self.pg_dir, ignore_errors=True)

    # -- the verdict ---------------------------------------------------------------------
    def verify(self, fault: str, plan: Plan, result: LoadResult, notes: str = "") -> FaultRow:
        acked_keys = set().union(*(plan.keys[i] for i in result.acked)) if result.acked else set()
        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            stored_rows = conn.execute(ROWS_PER_MESSAGE).fetchall()
            actual = funnel_rows(conn)
            statuses = conn.execute("SELECT count(*) FROM message_statuses").fetchone()[0]
        stored = {(s, m) for s, m, _ in stored_rows}
        repeated = sum(max(0, n - plan.rows.get((s, m), 1)) for s, m, n in stored_rows)
        extra_leads = len(actual - plan.reference)
        refused = sum(n for code, n in result.codes.items() if not code.startswith("2"))
        row = FaultRow(
            fault=fault, sent=len(plan.samples), acked=len(result.acked),
            messages=len(acked_keys), stored=len(acked_keys & stored),
            lost=len(acked_keys - stored), duplicated=repeated + extra_leads,
            funnel_equal=actual == plan.reference and statuses == plan.statuses,
            deliveries=result.deliveries, refused=refused, notes=notes)
        return row
