"""``trustseg qc explain``: why the QC model predicts what it does, as figures and JSON.

For a prediction folder and a QC model, the output folder holds

* ``embedding.png``: the cases' feature vectors in 2D (UMAP with ``umap-learn`` installed, else PCA;
  :func:`trustseg.quality.explain.embed`), the model's training cases and the new ones together, coloured by the
  true quality where known (the training cases', and the new ones' with ``data``), else the predicted quality;
* ``importance_<predictor>.png``: the tabular predictors' feature importances (the 20 largest);
* ``gradcam/<case>.png``: Grad-CAM of the CNN predictor for the ``max_cases`` cases with the lowest predicted
  quality (:func:`trustseg.quality.explain.cnn_grad_cams`), when the model has a CNN predictor;
* ``explain.json``: the per-case predictions, the embedding coordinates, the importances and which figures exist.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trustseg.core.atomic import atomic_dir, atomic_write_json
from trustseg.quality.cases import read_cases
from trustseg.quality.explain import cnn_grad_cams, embed, plot_embedding, plot_grad_cam, plot_importance
from trustseg.quality.model import QCModel
from trustseg.quality.registry import QC_PREDICTORS
from trustseg.quality.run import check_output_folder

EXPLAIN_JSON = "explain.json"


def explain_qc(
    pred_dir: str | Path,
    model: str | Path | QCModel,
    out: str | Path,
    *,
    data: str | Path | None = None,
    images: str | Path | Sequence[str | Path] | None = None,
    max_cases: int = 12,
    embedding: str = "auto",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the explanation figures and ``explain.json`` for the cases of ``pred_dir`` (module docstring).

    Returns:
        The ``explain.json`` contents: ``{"cases": rows, "embedding": {"method", "training": (N, 2),
        "cases": (n, 2)}, "importance": {predictor: {feature: value}}, "figures": {...}, "target"}``.
    """
    out = Path(out)
    check_output_folder(out, EXPLAIN_JSON, "an explanation", overwrite)
    qc = model if isinstance(model, QCModel) else QCModel.load(model)
    t = qc.config.target
    cnn_names = [n for n in qc.config.predictors if QC_PREDICTORS.meta(n)["input"] == "image"]
    cases = list(read_cases(pred_dir, data, target=t, with_image=qc.uses_images, images=images))
    inputs = [c.inp for c in cases]
    feats = qc.feature_rows(inputs)  # once, for the prediction and the embedding
    rows = qc.predict(inputs, features=feats)
    x_new = feats[1]
    truth_new = [c.truth for c in cases]
    res: dict[str, Any] = {"target": t, "cases": rows, "figures": {}, "importance": {}}
    with atomic_dir(out, overwrite=True) as tmp:
        x_train = qc.features if qc.features is not None else np.zeros((0, x_new.shape[1]))
        train_truth = np.asarray(qc.manifest.get("training", {}).get("truth", []), dtype=np.float64)
        x_all = np.concatenate([x_train, x_new], 0)
        if len(x_all) >= 3:
            coords, method = embed(x_all, method=embedding, seed=qc.config.seed)
            known = [v if v is not None else r[f"predicted_{t}"] for v, r in zip(truth_new, rows)]
            colour = np.concatenate(
                [train_truth if len(train_truth) == len(x_train) else np.full(len(x_train), np.nan), known]
            )
            label = (
                f"true {t}"
                if all(v is not None for v in truth_new)
                else f"{t} (true for training cases, else predicted)"
            )
            plot_embedding(coords, colour, tmp / "embedding.png", label, f"case features ({method})")
            res["embedding"] = {
                "method": method,
                "training": coords[: len(x_train)].tolist(),
                "cases": coords[len(x_train) :].tolist(),
            }
            res["figures"]["embedding"] = "embedding.png"
        for name, p in qc.predictors.items():
            if hasattr(p, "feature_importance"):
                imp = {k: float(v) for k, v in p.feature_importance().items()}
                res["importance"][name] = imp
                res["figures"][f"importance_{name}"] = plot_importance(
                    imp, tmp / f"importance_{name}.png", f"{name}: feature importance"
                ).name
        if cnn_names and max_cases > 0:
            order = np.argsort([r[f"predicted_{t}"] for r in rows], kind="stable")
            if not qc.config.higher_is_better:
                order = order[::-1]
            pick = [int(i) for i in order[:max_cases]]
            # negated for Dice: where the image lowers the predicted quality (for HD95 the output itself)
            cams = cnn_grad_cams(
                qc.predictors[cnn_names[0]], [inputs[i] for i in pick], negate=qc.config.higher_is_better
            )
            (tmp / "gradcam").mkdir()
            res["figures"]["gradcam"] = {}
            for i, cam in zip(pick, cams):
                inp = inputs[i]
                image = inp.image[0] if inp.image is not None else inp.probs[1:].sum(0)
                name = f"gradcam/{inp.case_id}.png"
                title = f"{inp.case_id}: predicted {t} {rows[i][f'predicted_{t}']:.3f}"
                plot_grad_cam(image, cam, inp.seg, tmp / name, title)
                res["figures"]["gradcam"][inp.case_id] = name
        atomic_write_json(tmp / EXPLAIN_JSON, res)
    return res
