"""trustseg.quality."""
