"""trustseg.cli."""
