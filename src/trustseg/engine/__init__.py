"""trustseg.engine."""
