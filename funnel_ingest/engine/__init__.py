"""③ The funnel rules, pure: text normalization, keyword matching, money and dates in
Indonesian chat text, classification, lead cycles. No I/O here (no Postgres, Redis, S3,
HTTP or Dagster); `store/` and `report/` call it, it calls neither."""
