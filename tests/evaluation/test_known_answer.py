"""Known-answer wiring test: one hand-built 3D case (anisotropic spacing, confidence / entropy / variance maps, a
planted error mask, samples, an image) whose every suite entry is checked against an independent computation
(numpy by hand, scipy, scikit-learn, MONAI, torchmetrics, properscoring).

The test fails if the suite produces an entry this file does not check, so a new component needs its reference
here (or in test_components.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import properscoring
import pytest
import torch
from monai.metrics import DiceMetric, compute_average_surface_distance, compute_surface_dice
from scipy import ndimage, stats
from scipy.spatial.distance import cdist
from sklearn.metrics import average_precision_score, log_loss, roc_auc_score
from torchmetrics.functional.classification import multiclass_calibration_error

from tests.metrics.test_curvas import _challenge_by_quadrature
from trustseg.evaluation import EvaluationSuite, SuiteConfig, flatten

SPACING = (2.5, 1.0, 0.5)
SHAPE = (4, 8, 8)
CLASSES = ["background", "organ"]
RATERS = ["ann", "bob", "cy"]
FN_VOXEL, FP_VOXEL = (1, 3, 3), (0, 0, 7)  # the planted errors: a missed organ voxel and a false positive


def build_case():
    """Labels ``(3, 4, 8, 8)``, probabilities, maps, samples, image, and the numpy majority vote."""
    labels = np.zeros((3, *SHAPE), np.int64)
    labels[0, 1:3, 2:6, 2:6] = 1
    labels[1, 1:3, 2:6, 2:7] = 1
    labels[2, 1:4, 2:6, 2:6] = 1
    maj = (labels.sum(0) >= 2).astype(np.int64)  # K = 2, R = 3: no ties
    rng = np.random.default_rng(7)
    p1 = 0.1 + 0.8 * maj + rng.uniform(-0.08, 0.08, SHAPE)
    p1[FN_VOXEL], p1[FP_VOXEL] = 0.3, 0.7
    probs = np.stack([1 - p1, p1]).astype(np.float32)
    hard = probs.argmax(0)
    s_hard = [labels[0], labels[1].copy(), np.zeros(SHAPE, np.int64)]  # a rater, a shifted rater, an empty sample
    s_hard[1][3, 2:6, 2:6] = 1
    samples = np.stack([np.stack([1.0 - s, s * 1.0]) * 0.9 + 0.05 for s in s_hard]).astype(np.float32)
    ent = -(probs * np.log(probs)).sum(0)
    maps = {"entropy": ent, "confidence": probs.max(0), "variance": samples[:, 1].var(0)}
    image = (100.0 * ndimage.gaussian_filter(maj.astype(float), 1.0) + rng.normal(0, 1, SHAPE))[None]
    return labels, maj, probs, hard, samples, maps, image.astype(np.float32)


def dice_np(a, b):
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def surface(mask):
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def ece_np(conf, acc, bins=15):
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    return sum(abs(acc[idx == b].sum() - conf[idx == b].sum()) for b in range(bins)) / conf.size


def ueo_np(u, err):
    best = 0.0
    for t in np.linspace(u.min(), u.max(), 100):
        best = max(best, dice_np(err, u > t))
    return best


def iou_distance(a, b):
    union = (a | b).sum()
    return 0.0 if union == 0 else 1 - (a & b).sum() / union


def ranks_spearman(x, y):
    return stats.spearmanr(x, y).statistic


@pytest.fixture(scope="module", params=[False, True], ids=["streaming", "exact"])
def evaluated(request):
    labels, maj, probs, hard, samples, maps, image = build_case()
    suite = EvaluationSuite(CLASSES, RATERS, SuiteConfig(exact=request.param))
    row = suite.add_case(
        "c",
        torch.from_numpy(probs),
        torch.from_numpy(labels),
        spacing=SPACING,
        maps={k: torch.from_numpy(v) for k, v in maps.items()},
        samples=torch.from_numpy(samples),
        image=torch.from_numpy(image),
    )
    return row, suite.result(), (labels, maj, probs, hard, samples, maps, image)


def expected_row(labels, maj, probs, hard, samples, maps, image) -> dict[str, float]:
    """Every per-case entry, computed independently (flattened names)."""
    exp: dict[str, float] = {}
    p_fg, fg = hard == 1, maj == 1
    # overlap
    exp["dice/majority/organ"] = exp["dice/majority/mean"] = dice_np(p_fg, fg)
    cplus, cminus = (labels == 1).all(0), (labels != 1).all(0)
    cons = 2 * (p_fg & cplus).sum() / ((p_fg & (cplus | cminus)).sum() + cplus.sum())
    exp["dice/consensus/organ"] = exp["dice/consensus/mean"] = cons
    per_rater = [dice_np(p_fg, labels[r] == 1) for r in range(3)]
    for r, name in enumerate(RATERS):
        exp[f"dice/{name}/organ"] = exp[f"dice/{name}/mean"] = per_rater[r]
    exp["dice/mean_rater/organ"] = exp["dice/mean_rater/mean"] = np.mean(per_rater)
    exp["iou/majority/organ"] = exp["iou/majority/mean"] = (p_fg & fg).sum() / (p_fg | fg).sum()
    exp["qc_dice/majority/mean"] = dice_np(p_fg, fg)
    # surface distances in mm: brute-force pooled HD95; MONAI ASSD and NSD (tolerance 2 mm)
    pa, pb = np.argwhere(surface(p_fg)) * SPACING, np.argwhere(surface(fg)) * SPACING
    d = cdist(pa, pb)
    exp["hd95/majority/organ"] = exp["hd95/majority/mean"] = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
    mp, mt = (torch.from_numpy(m.astype(np.float32))[None, None] for m in (p_fg, fg))
    assd = compute_average_surface_distance(mp, mt, include_background=True, symmetric=True, spacing=list(SPACING))
    exp["assd/majority/organ"] = exp["assd/majority/mean"] = float(assd)
    nsd = compute_surface_dice(mp, mt, [2.0], include_background=True, spacing=list(SPACING))
    exp["nsd/majority/organ"] = exp["nsd/majority/mean"] = float(nsd)
    # calibration of the case against the majority vote
    flat_p = torch.from_numpy(probs.reshape(2, -1).T.astype(np.float64))
    exp["ece_toplabel/majority/all"] = float(
        multiclass_calibration_error(flat_p, torch.from_numpy(maj.ravel()), num_classes=2, n_bins=15)
    )
    p64 = probs.reshape(2, -1).T.astype(np.float64)
    exp["nll/majority/all"] = log_loss(maj.ravel(), p64 / p64.sum(1, keepdims=True), labels=[0, 1])
    # CURVAS: consensus Dice, confidence, volume CRPS, ECE per rater (50 bins), in both modes
    voxel = float(np.prod(SPACING))
    vols = np.array([(labels[r] == 1).sum() * voxel for r in range(3)])
    v_hat = float(probs[1].astype(np.float64).sum()) * voxel
    conf = 0.5 * ((1 - probs[1][cminus].astype(np.float64).mean()) + probs[1][cplus].astype(np.float64).mean())
    ece50 = np.mean(
        [
            float(multiclass_calibration_error(flat_p, torch.from_numpy(labels[r].ravel()), num_classes=2, n_bins=50))
            for r in range(3)
        ]
    )
    dm = DiceMetric(include_background=False, reduction="mean", ignore_empty=True)
    dis = ~(cplus | cminus)
    dm(torch.from_numpy((p_fg & ~dis).astype(np.uint8)), torch.from_numpy(cplus.astype(np.uint8)))  # (D, H, W) rows
    for mode, dice_c, crps in (
        ("volumetric", cons, properscoring.crps_gaussian(v_hat, vols.mean(), vols.std())),
        ("challenge", float(dm.aggregate()), _challenge_by_quadrature(v_hat, vols.mean(), vols.std())),
    ):
        exp[f"curvas_dice/{mode}/organ"] = dice_c
        exp[f"curvas_confidence/{mode}/organ"] = conf
        exp[f"curvas_crps/{mode}/organ"] = crps
        exp[f"curvas_predicted_volume/{mode}/organ"] = v_hat
        exp[f"curvas_rater_volume_mu/{mode}/organ"] = vols.mean()
        exp[f"curvas_rater_volume_sigma/{mode}/organ"] = vols.std()
        exp[f"curvas_ece/{mode}/all"] = ece50
    # QUBIQ soft Dice over thresholds 0.1 .. 0.9 (both empty -> 1)
    soft1 = (labels == 1).mean(0)
    qd = []
    for t in np.arange(1, 10) / 10:
        a, b = probs[1] > t, soft1 > t
        qd.append(1.0 if a.sum() + b.sum() == 0 else dice_np(a, b))
    exp["qubiq_soft_dice/soft/organ"] = exp["qubiq_soft_dice/soft/mean"] = np.mean(qd)
    # samples: GED² (d = 1 − IoU, d(∅, ∅) = 0, i = j included), its root, Hungarian IoU (brute force)
    s_masks = [s > 0 for s in samples.argmax(1)]
    y_masks = [labels[r] > 0 for r in range(3)]

    def e_d(xs, ys):
        return np.mean([iou_distance(x, y) for x in xs for y in ys])

    ged2 = 2 * e_d(s_masks, y_masks) - e_d(s_masks, s_masks) - e_d(y_masks, y_masks)
    exp["ged2_iou/raters/all"], exp["sqrt_ged2_iou/raters/all"] = ged2, math.sqrt(ged2)
    iou_m = np.array([[1 - iou_distance(s, y) if (s | y).any() else 1.0 for y in y_masks] for s in s_masks])
    exp["hungarian_iou/raters/all"] = max(np.mean(iou_m[range(3), list(p)]) for p in itertools.permutations(range(3)))
    # uncertainty maps, oriented: confidence enters as 1 − confidence
    ybar = np.stack([(labels == k).mean(0) for k in range(2)])
    dis_map = (ybar * (1 - ybar)).sum(0)
    exp["rater_disagreement_sum/raters/all"] = dis_map.sum()
    err = hard != maj
    assert err.sum() == 2 and err[FN_VOXEL] and err[FP_VOXEL]  # the planted error mask
    fg_dil = ndimage.binary_dilation(p_fg, structure=np.ones((5, 5, 5), bool))
    boundary = ndimage.maximum_filter(maj, size=3, mode="nearest") != ndimage.minimum_filter(maj, 3, mode="nearest")
    band = ndimage.distance_transform_edt(~boundary, sampling=SPACING) <= 1.0
    g = np.sqrt(sum(x**2 for x in np.gradient(image[0].astype(np.float64), *SPACING)))
    for measure, m in maps.items():
        name = "one_minus_confidence" if measure == "confidence" else measure
        u = (1.0 - m if measure == "confidence" else m).astype(np.float32).astype(np.float64)
        exp[f"pixel_pearson/{name}/disagreement"] = stats.pearsonr(u.ravel(), dis_map.ravel()).statistic
        exp[f"pixel_spearman/{name}/disagreement"] = ranks_spearman(u.ravel(), dis_map.ravel())
        exp[f"ueo/{name}/error"] = ueo_np(u, err)
        exp[f"error_auroc/{name}/error"] = roc_auc_score(err.ravel(), u.ravel())
        exp[f"error_auprc/{name}/error"] = average_precision_score(err.ravel(), u.ravel())
        if measure == "variance":
            exp[f"variance_ncc/{name}/disagreement"] = stats.pearsonr(u.ravel(), dis_map.ravel()).statistic
        exp[f"image_score/{name}/mean"] = u.mean()
        exp[f"image_score/{name}/fg_mean"] = u[fg_dil].mean()
        gb, ub = g[band], u[band]
        exp[f"ucc_gradient/{name}/majority"] = ranks_spearman(gb, ub)
        i, j = np.triu_indices(gb.size, 1)
        valid = gb[i] != gb[j]
        ok = (np.sign(gb[i] - gb[j]) == -np.sign(ub[i] - ub[j])) & (ub[i] != ub[j])
        exp[f"ur_gradient/{name}/majority"] = ok[valid].mean()
    return exp


def test_every_per_case_entry_matches_an_independent_computation(evaluated):
    row, _, inputs = evaluated
    got = {k: v for k, v in flatten(row).items() if k != "case"}
    exp = expected_row(*inputs)
    assert set(got) == set(exp)  # no entry goes unchecked
    for key, value in exp.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_the_case_separates_what_the_mutants_confuse(evaluated):
    """Guards that the known answers can tell the wirings apart (else a wrong wiring could pass)."""
    row, _, (labels, maj, probs, hard, samples, maps, image) = evaluated
    assert row["curvas_dice"]["challenge"]["organ"] != pytest.approx(row["curvas_dice"]["volumetric"]["organ"])
    assert row["curvas_crps"]["challenge"]["organ"] != pytest.approx(row["curvas_crps"]["volumetric"]["organ"])
    flat = torch.from_numpy(probs.reshape(2, -1).T.astype(np.float64))
    no_spacing = compute_average_surface_distance(
        *(torch.from_numpy(m.astype(np.float32))[None, None] for m in (hard == 1, maj == 1)), symmetric=True
    )
    assert float(no_spacing) != pytest.approx(row["assd"]["majority"]["organ"])
    u = maps["entropy"]
    assert ueo_np(u, hard == maj) != pytest.approx(row["ueo"]["entropy"]["error"])
    assert stats.pearsonr(maps["confidence"].ravel(), u.ravel()).statistic < 0  # orientation matters
    assert float(multiclass_calibration_error(flat, torch.from_numpy(maj.ravel()), num_classes=2, n_bins=15)) > 0


def test_summary_and_sections_match_independent_computations(evaluated):
    row, res, (labels, maj, probs, hard, samples, maps, image) = evaluated
    p = probs.reshape(2, -1).astype(np.float64)
    ybar = np.stack([(labels == k).mean(0) for k in range(2)]).reshape(2, -1)
    conf, pred = p.max(0), p.argmax(0)
    m = maj.ravel()
    onehot = np.stack([m == 0, m == 1]).astype(float)
    summary = {
        **{f"dice/majority/{k}": row["dice"]["majority"][k] for k in ("organ", "mean")},
        "dice/consensus/mean": row["dice"]["consensus"]["mean"],
        "dice/mean_rater/mean": row["dice"]["mean_rater"]["mean"],
        "hd95/majority/mean": row["hd95"]["majority"]["mean"],
        "assd/majority/mean": row["assd"]["majority"]["mean"],
        "nsd/majority/mean": row["nsd"]["majority"]["mean"],
        "qubiq_soft_dice/soft/mean": row["qubiq_soft_dice"]["soft"]["mean"],
        "ged2_iou/raters/all": row["ged2_iou"]["raters"]["all"],
        "sqrt_ged2_iou/raters/all": row["sqrt_ged2_iou"]["raters"]["all"],
        # pooled calibration (one case: the pooled voxels are this case's), by hand
        "ece_toplabel/majority/all": ece_np(conf, (pred == m).astype(float)),
        "ece_classwise/majority/all": np.mean([ece_np(p[k], onehot[k]) for k in range(2)]),
        "ece_toplabel/soft/all": ece_np(conf, ybar[pred, np.arange(pred.size)]),
        "nll/soft/all": float(np.mean(-(ybar * np.log(p)).sum(0))),
        "brier/soft/all": float(np.mean(((p - ybar) ** 2).sum(0))),
    }
    got = flatten(res["summary"])
    assert set(got) == set(summary)
    for key, value in summary.items():
        assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # the per-case mean over one case is the case; counts are 1
    assert flatten(res["mean"]) == pytest.approx({k: v for k, v in flatten(row).items() if k != "case"})
    assert set(flatten(res["count"]).values()) == {1}
    # calibration against each rater and the soft label (top-label ECE, torchmetrics / by hand)
    for r, name in enumerate(RATERS):
        ref = multiclass_calibration_error(
            torch.from_numpy(p.T), torch.from_numpy(labels[r].ravel()), num_classes=2, n_bins=15
        )
        assert res["calibration"][name]["ece_toplabel"] == pytest.approx(float(ref), abs=1e-6)
    assert set(res["calibration"]) == {"majority", "soft", *RATERS}
    # uncertainty section: per-case means and the pooled Pearson (one case: the case's pixel Pearson)
    for name in ("entropy", "one_minus_confidence", "variance"):
        u = res["uncertainty"][name]
        assert u["pixel_pearson_pooled"] == pytest.approx(row["pixel_pearson"][name]["disagreement"], abs=1e-9)
        assert u["ueo"] == row["ueo"][name]["error"] and u["ur_gradient"] == row["ur_gradient"][name]["majority"]
        assert "image_pearson" not in u  # needs 3 cases
    assert res["quality_control"] == {}  # needs 2 cases
