"""Out-of-distribution and robustness protocols: graded distortions of test images, image-level scores that
should flag them (aggregated uncertainty, layer agreement, ensemble agreement), AUROC / FPR@95 per distortion
and severity, and SURE's noise-robustness protocol."""
