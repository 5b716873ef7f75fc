"""Data layer: cases with several raters, readers/writers, the trustseg dataset layout, importers, splits,
the synthetic multi-rater generator and graded distortions."""
