"""⑤ The funnel table read for people: report rows, the per-channel summary, CSV and
Parquet."""
