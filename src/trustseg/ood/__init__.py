"""trustseg.ood."""
