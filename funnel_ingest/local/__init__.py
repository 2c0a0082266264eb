"""The stack without Docker (Postgres, Redis, an S3 server, a local Dagster) for `funnel up`,
the demo, the tests and the benchmarks. Never imported by the pipeline stages."""
