"""Send sample webhooks to the running API, as the original README did:

    python3 tests/mock_source.py                 # 600 simulated webhooks to http://127.0.0.1:8000
    FUNNEL_API_URL=http://api:8000 python3 tests/mock_source.py --count 5000 --rate 500

A thin wrapper over `funnel send-mock` (every option of it works here; `--help` lists them).
Secrets come from the environment, else from the local stack (`funnel up`). Run with any
python3: when the project is not importable it re-runs itself with the repository's .venv.
"""

from _script import run_funnel

if __name__ == "__main__":
    run_funnel("send-mock", __file__)
