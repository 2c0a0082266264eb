"""④ The Postgres side: stream ranges drained into the message tables and the funnel,
keyword versions and their sources, reconciliation and backfills from the archive."""
