"""``trustseg compare``: methods side by side under identical conditions (config, jobs, table) and its report
(``trustseg report``)."""
