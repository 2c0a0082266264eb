"""The `Definitions` of the `funnel_dagster` code location (loaded by `workspace.yaml`).

Placeholder: the assets (keywords, classified messages, funnel, CSV report), the stream sensor,
the report schedule and the asset checks come in the Dagster issue. Keep the module-level name
`defs`: `workspace.yaml` and the deployment tests load it.
"""

from __future__ import annotations

import dagster as dg

defs = dg.Definitions()
