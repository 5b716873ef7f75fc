"""One case of a prediction folder: predict it with any predictor and hand it to the folder's writer.

Shared by the one-process path (:func:`trustseg.engine.predict.predict_folder`) and each rank of a sharded one
(:mod:`trustseg.engine.sharded_predict`), so both write the same files for the same case.
"""

from __future__ import annotations

from trustseg.core.errors import DataError
from trustseg.core.memory import available_bytes, is_allocation_failure
from trustseg.engine.prediction_folder import Annotator, FolderWriter, InputItem
from trustseg.inference.memory import MemoryNeededError, memory_message
from trustseg.inference.predictor import Predictor, check_image


def predict_case(predictor: Predictor, item: InputItem, writer: FolderWriter, annotate: Annotator | None) -> None:
    """Check, predict and write one loaded case.

    Without an annotation hook the raw image is handed to ``predict_consuming`` when the predictor offers it (it
    may normalise the array in place).

    Raises:
        DataError: an image that does not fit the predictor, or a prediction that needs more memory than is
            available (naming the case and its file).
    """
    check_image(predictor.info, item.image, item.source)
    try:
        consuming = getattr(predictor, "predict_consuming", None)
        if consuming is not None and annotate is None:
            # the raw image is not needed after predicting: the predictor may normalise it in place
            image, item.image = item.image, None
            pred = consuming(image, item.spacing)
            del image
        else:
            pred = predictor.predict(item.image, item.spacing)
        writer.write(item, pred)
        del pred
    except MemoryNeededError as e:
        raise DataError(f"case {item.case_id!r}: {e.problem}", item.source) from None
    except (RuntimeError, MemoryError) as e:  # an allocator failure in the predictor or the writer
        if not is_allocation_failure(e):
            raise
        raise DataError(
            f"case {item.case_id!r}: {memory_message(None, available_bytes(), 'predict')}", item.source
        ) from None
