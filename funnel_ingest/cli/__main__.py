"""`python -m funnel_ingest.cli`: the `funnel` command."""

from funnel_ingest.cli import main

raise SystemExit(main())
