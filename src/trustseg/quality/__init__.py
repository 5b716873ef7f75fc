"""Segmentation quality without ground truth: per-case features, predictors of Dice (tabular and image-based),
a conformal review flag and interval, and their interpretation (Grad-CAM, embeddings).

Layer: above ``engine`` (the CNN predictor trains with its seeding and device helpers), beside ``ood``.
"""
