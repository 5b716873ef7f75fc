"""Segmentation quality without ground truth: per-case features, predictors of Dice (tabular and image-based),
a conformal review flag and interval, and their interpretation (Grad-CAM, embeddings).

Layer: above ``engine`` (the CNN predictor trains with its seeding and device helpers), beside ``ood``.
The predictors register themselves in :data:`QC_PREDICTORS` when their modules are imported here.
"""

from trustseg.quality import cnn, explain, explain_run, tabular
from trustseg.quality.config import QCConfig
from trustseg.quality.features import AggregateScore, FeatureConfig, case_features, feature_table
from trustseg.quality.model import QCModel
from trustseg.quality.registry import QC_PREDICTORS
from trustseg.quality.run import fit_qc, predict_qc, qc_annotator
from trustseg.quality.targets import QC_TARGETS

__all__ = [
    "QC_PREDICTORS",
    "QC_TARGETS",
    "AggregateScore",
    "FeatureConfig",
    "QCConfig",
    "QCModel",
    "case_features",
    "cnn",
    "explain",
    "explain_run",
    "feature_table",
    "fit_qc",
    "predict_qc",
    "qc_annotator",
    "tabular",
]
