"""trustseg.reports."""
