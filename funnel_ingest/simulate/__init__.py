"""Synthetic Indonesian sales conversations with their ground truth, written as each
provider's webhooks, and a sender for them (the demo, `funnel send-mock`, tests, benchmarks).
Never imported by the pipeline stages."""
