"""End-to-end tests: the API and a real Dagster (webserver + daemon) on the local stack."""
