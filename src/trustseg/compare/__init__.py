"""``trustseg compare``: methods side by side under identical conditions (config, jobs, table, report)."""
