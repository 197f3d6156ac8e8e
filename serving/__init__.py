"""Risk-score serving: the HTTP API, its auth and rate limit, and the lineage ledger."""
