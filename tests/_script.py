"""Shared start of the original scripts (`tests/mock_source.py`, `tests/export_report.py`):
run a `funnel` subcommand with the script's arguments, from any python3 — when the project is
not importable, re-run with the repository's .venv."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_funnel(command: str, script: str) -> None:
    try:
        from funnel_ingest.cli import main
    except ImportError:
        venv_python = ROOT / ".venv" / "bin" / "python"
        if not venv_python.exists() or Path(sys.prefix).resolve() == (ROOT / ".venv").resolve():
            raise  # already the project's venv: a real import error
        os.execv(venv_python, [str(venv_python), script, *sys.argv[1:]])
    raise SystemExit(main([command, *sys.argv[1:]]))
