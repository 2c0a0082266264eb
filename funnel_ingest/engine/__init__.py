"""The funnel engine: keywords, Indonesian-aware classification, lead cycles, the funnel table.

Pure domain logic (text, matcher, money, dates, classify, cycles) knows nothing of FastAPI,
Dagster or Redis; `store` and `drain` are the Postgres/Redis adapters the API, the CLI and
Dagster call.
"""
