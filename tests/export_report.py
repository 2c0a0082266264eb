"""Write the funnel report to a CSV file, as the original README did:

    python3 tests/export_report.py                            # ./funnel_report.csv, every lead
    python3 tests/export_report.py --from 2025-10-01 --to 2025-10-31 --channel ads -o ads.csv
    python3 tests/export_report.py -o s3://funnel-reports/exports/october.parquet

A thin wrapper over `funnel export` (every option of it works here; `--help` lists them): the
columns of GET /funnel-report?format=csv. Settings come from the environment, else from the
local stack (`funnel up`). Run with any python3: when the project is not importable it re-runs
itself with the repository's .venv.
"""

from _script import run_funnel

if __name__ == "__main__":
    run_funnel("export", __file__)
