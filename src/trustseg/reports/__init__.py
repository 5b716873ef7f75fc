"""Reports a person wants to look at: overview figures (image, raters, prediction, uncertainty) and an HTML
page with the metric tables. Machine-readable results stay JSON/CSV (written by the engine)."""
