"""⑥ Feedback to the ads: the funnel's events of Click-to-WhatsApp leads sent back to Meta's
Conversions API, so that the ad account optimizes for the leads that book and pay.

    funnel (Postgres) --triggers, same transaction--> conversion_events (the outbox)
    conversion_events --delivery: claim, POST, record--> Meta's Conversions API

- `meta`: the request Meta documents (an event per outbox row, a batch per request) and what
  its answers mean;
- `outbox`: the outbox table: claims, the answer kept per event, backoff, expiry, counts;
- `delivery`: one delivery pass (claim a batch, post it, record the answer, until nothing is
  due), called by the Dagster asset and by `funnel conversions send`.

The rules (which events, when, exactly once) are in docs/conversions.md.
"""
