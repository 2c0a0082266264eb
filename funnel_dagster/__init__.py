"""Dagster code location `funnel_dagster`: orchestration of the Funnel Message pipeline.

The `Definitions` object lives in `funnel_dagster.definitions` and is loaded by `workspace.yaml`.
"""
