"""Fixtures of the fault-injection suite and its report (printed after the run; also written
to $FUNNEL_FAULT_REPORT when set)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from funnel_ingest import db
from tests.faults.harness import FaultRow, FaultStack, Plan, build_plan
from tests.support import TEST_DB

ROWS: list[FaultRow] = []


@pytest.fixture(scope="session")
def plan(stack_env: dict[str, str]) -> Iterator[Plan]:
    """One simulated two days of traffic (about 800 webhooks) and its reference funnel."""
    name = f"{TEST_DB}_fault_ref"
    url = stack_env["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
    db.drop_database(url)
    db.ensure_database(url)
    db.migrate(url)
    try:
        yield build_plan(customers=200, seed=20261129, database_url=url)
    finally:
        db.drop_database(url)


@pytest.fixture
def fault_stack(tmp_path: Path) -> Iterator[FaultStack]:
    fs = FaultStack(tmp_path / "stack")
    try:
        yield fs.start()
    finally:
        fs.stop()


@pytest.fixture
def report_row():
    return ROWS.append


def _table() -> str:
    head = ("| fault | webhooks sent | acked | requests (retries incl.) | refused | messages acked "
            "| stored | lost | duplicated | funnel = reference | notes |")
    lines = [head, "|" + "---|" * 11]
    for r in ROWS:
        lines.append(f"| {r.fault} | {r.sent} | {r.acked} | {r.deliveries} | {r.refused} "
                     f"| {r.messages} | {r.stored} | {r.lost} | {r.duplicated} "
                     f"| {'yes' if r.funnel_equal else 'NO'} | {r.notes} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter) -> None:
    if not ROWS:
        return
    terminalreporter.section("fault injection")
    terminalreporter.write_line(_table())
    if path := os.environ.get("FUNNEL_FAULT_REPORT"):
        Path(path).write_text(_table() + "\n")
