"""① HTTP: the FastAPI routes (webhooks, reports, campaigns, keywords, dashboard, health) and
the edge limits on request bodies. The only package that imports FastAPI; `funnel_ingest.main`
builds the app from it."""
