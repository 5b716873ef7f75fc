"""trustseg.data.importers."""
