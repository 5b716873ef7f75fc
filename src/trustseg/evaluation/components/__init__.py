"""The registered suite components, explicitly imported: importing this package registers every
component in :data:`~trustseg.evaluation.component.SUITE` (the suite runs them by their ``order``)."""

from trustseg.evaluation.components.analyses import (
    DicePredictionLOO,
    ImageCorrelation,
    QualityControl,
    UncertaintySummary,
)
from trustseg.evaluation.components.calibration import Calibration
from trustseg.evaluation.components.gradient import GradientInterpretability
from trustseg.evaluation.components.multirater import Curvas, QubiqSoftDice, SampleAgreement
from trustseg.evaluation.components.quality_prediction import PredictedQuality, QualityPrediction
from trustseg.evaluation.components.segmentation import Overlap, Surface
from trustseg.evaluation.components.uncertainty import ImageScores, MapQuality, RaterDisagreement

__all__ = [
    "Calibration",
    "Curvas",
    "DicePredictionLOO",
    "GradientInterpretability",
    "ImageCorrelation",
    "ImageScores",
    "MapQuality",
    "Overlap",
    "PredictedQuality",
    "QualityControl",
    "QualityPrediction",
    "QubiqSoftDice",
    "RaterDisagreement",
    "SampleAgreement",
    "Surface",
    "UncertaintySummary",
]
