"""Compare uncertainty methods across datasets and seeds: the run (``trustseg compare``) and its report."""
