"""Funnel Message: chat webhooks to a per-lead sales funnel.

The folders are the stages a message passes through:

    api/       ① HTTP routes; the only FastAPI code
    ingest/    ② body -> normalized messages -> raw archive (S3) + stream (Redis)
    (Dagster)  funnel_dagster drains the streams in micro-batches
    store/     ④ stream ranges -> Postgres tables -> the funnel
    engine/    ③ the pure rules store/ applies (classification, money, dates, cycles)
    report/    ⑤ the funnel for people: rows, summary, CSV, Parquet

Drivers and tooling sit apart: `cli/` (the `funnel` command), `local/` (the stack without
Docker), `simulate/` (synthetic traffic). The package root holds the shared kernel: `main`
(the app), `settings`, `messages` (the contract between the stages), `db`, `s3`, `metrics`.
"""
