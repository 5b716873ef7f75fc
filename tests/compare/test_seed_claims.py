"""benchmarks/seed_claims.py: the verdict rules (known answers) and the script on a real tiny comparison."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from trustseg.compare.config import compare_config_from_dict
from trustseg.compare.jobs import Job
from trustseg.compare.stats import paired_bootstrap_correlation

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def claims():
    spec = importlib.util.spec_from_file_location("seed_claims", ROOT / "benchmarks" / "seed_claims.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["seed_claims"] = module
    spec.loader.exec_module(module)
    return module


def _ci(diff, low, high):
    return {"diff": diff, "low": low, "high": high, "n_cases": 10, "p_better": None}


def test_case_verdicts_follow_the_ci(claims):
    v = claims.verdict_cases
    assert v({"a": 1.0, "ci": _ci(0.1, 0.02, 0.2)}, True) == "reproduced"
    assert v({"a": 1.0, "ci": _ci(0.1, -0.02, 0.2)}, True) == "inconclusive"
    assert v({"a": 1.0, "ci": _ci(-0.1, -0.2, -0.02)}, True) == "not reproduced"
    assert v({"a": 1.0, "ci": _ci(-0.1, -0.2, 0.02)}, True) == "not reproduced"
    # lower is better (e.g. UCC): a negative difference with the whole CI below 0 is the claimed side
    assert v({"a": 1.0, "ci": _ci(-0.1, -0.2, -0.02)}, False) == "reproduced"
    assert v({"a": 1.0, "ci": _ci(-0.1, -0.2, 0.05)}, False) == "inconclusive"
    assert v({"a": None, "ci": None}, True) == "not testable here"
    # two methods equal on every case (SURE before its warm-up is plain evidential): nothing to test
    assert v({"a": 1.0, "ci": _ci(0.0, 0.0, 0.0)}, True) == "not testable here (identical on every case)"


def test_seed_verdicts_need_every_seed(claims):
    v = claims.verdict_seeds
    assert v([0.5, 0.6], [0.4, 0.5], True) == "reproduced"
    assert v([0.5], [0.4], True) == "reproduced (1 seed)"
    assert v([0.5, 0.3], [0.4, 0.5], True) == "inconclusive"
    assert v([0.3, 0.3], [0.4, 0.5], True) == "not reproduced"
    assert v([0.3], [0.4], False) == "reproduced (1 seed)"
    assert v([], [0.4], True) == "not testable here"
    assert claims.gain(0.6, 0.5) == pytest.approx(0.2) and claims.gain(0.4, -0.5) == pytest.approx(1.8)


def test_script_on_a_real_comparison(claims, real_compare, tmp_path):
    """The tiny real comparison (softmax and MC dropout, 2 seeds): what it can test gets its number, computed here
    independently from the per-case results; what needs an ensemble, EDUE, SURE or layer ensemble is not
    testable; the tables are copied beside the claims."""
    out, _ = real_compare
    assert claims.main([str(out), "--out", str(tmp_path)]) == 0
    doc = (tmp_path / "seed_claims.md").read_text()
    data = json.loads((tmp_path / "seed_claims.json").read_text())[0]
    assert data["dataset"] == "tiny" and data["seeds"] == [0, 1]
    by_claim = {c["claim"]: c for c in data["claims"]}
    base = next(c for k, c in by_claim.items() if k.startswith("a softmax U-Net's entropy"))
    # the softmax pixel r: per test case averaged over the 2 seeds, then over cases
    per_case: dict[str, list[float]] = {}
    for seed in (0, 1):
        res = json.loads((out / "jobs" / "tiny" / "softmax" / f"seed{seed}" / "eval" / "results.json").read_text())
        for row in res["per_case"]:
            r = row.get("pixel_pearson", {}).get("entropy", {}).get("disagreement")
            if isinstance(r, float) and np.isfinite(r):
                per_case.setdefault(row["case"], []).append(r)
    want = np.mean([np.mean(v) for v in per_case.values()])
    assert base["measured"] == f"softmax entropy pixel r {want:.3f}"
    assert base["verdict"] == ("reproduced" if want >= 0.4 else "not reproduced")
    for key in ("EDUE's predicted variance", "better NLL than a deep ensemble", "lower UCC_g"):
        claim = next(c for k, c in by_claim.items() if k.startswith(key))
        assert claim["verdict"] == "not testable here", key
    assert not any(c["paper"] == "LIDC anchors" for c in data["claims"])  # an anchor of LIDC only
    assert "| methods.md |" in doc and (tmp_path / "tiny" / "table.json").is_file()


def _fake_run(claims, tmp_path, n_images: int, folds: int, seed: int = 0, noise_b: float = 4.0):
    """A run of edue and the ensemble whose per-case rows are made here: EDUE's predicted variance tracks the
    images' disagreement closely (noise 0.5), the ensemble's variance loosely (noise ``noise_b``)."""
    rng = np.random.default_rng(seed)
    cfg = compare_config_from_dict(
        {
            "datasets": [{"name": "d", "synth": {"cases": 12}}],
            "methods": [{"name": "ensemble"}, {"name": "edue"}],
            "baseline": "ensemble",
        }
    )
    jobs, results, truth = [], {}, []
    for fold in range(folds):
        dis = rng.uniform(1.0, 10.0, size=n_images)
        scores = {"edue": dis + 0.5 * rng.normal(size=n_images), "ensemble": dis + noise_b * rng.normal(size=n_images)}
        truth.append({f"f{fold}c{i}": (scores["edue"][i], scores["ensemble"][i], dis[i]) for i in range(n_images)})
        for method, name in (("edue", "predicted_variance"), ("ensemble", "variance")):
            job = Job(len(jobs), "d", method, 0, fold, "d", tmp_path / method / f"fold{fold}")
            jobs.append(job)
            rows = [
                {
                    "case": f"f{fold}c{i}",
                    "image_score": {name: {"mean": float(scores[method][i])}},
                    "rater_disagreement_sum": {"raters": {"all": float(dis[i])}},
                }
                for i in range(n_images)
            ]
            r = float(np.corrcoef(scores[method], dis)[0, 1])
            results[job.name] = {"per_case": rows, "uncertainty": {name: {"image_pearson": r}}}
    return claims.Run(tmp_path, cfg, jobs, results), truth, cfg


def test_image_level_gain_has_a_bootstrap_ci_over_the_test_images(claims, tmp_path):
    run, truth, cfg = _fake_run(claims, tmp_path, n_images=40, folds=2)
    ci = claims.image_r_ci(run, "edue", "predicted_variance", "variance")
    b = cfg.bootstrap
    assert ci == paired_bootstrap_correlation(truth, b.resamples, b.confidence, b.seed)
    assert ci["n_cases"] == 80 and ci["groups"] == 2
    text, verdict = claims._gain_claim("edue", "image", 0.55, "variance")(run)
    assert verdict == "reproduced" and "80 test images over 2 seed/fold run(s)" in text


def test_image_level_gain_on_six_images_is_inconclusive_not_reproduced(claims, tmp_path):
    """Six test images per fold (QUBIQ): a positive gain whose CI includes 0 is inconclusive, whatever its size."""
    run, _, _ = _fake_run(claims, tmp_path, n_images=6, folds=1, seed=5, noise_b=1.5)
    text, verdict = claims._gain_claim("edue", "image", 0.55, "variance")(run)
    ci = claims.image_r_ci(run, "edue", "predicted_variance", "variance")
    assert ci["low"] < 0 < ci["diff"], ci  # seed 5: EDUE ahead on these 6 images, the CI includes 0
    assert verdict == "inconclusive" and "6 test images over 1 seed/fold run(s)" in text


def test_curve_and_kept_sections(claims, real_compare, tmp_path):
    """``--curve`` writes every epoch of the softmax run with the plateau epoch computed from its history here;
    ``--keep`` carries a section (and its learning curve) whose run folder is gone into the next output, marked,
    and only once; a hand-written section survives every rewrite."""
    import csv

    out, _ = real_compare
    assert claims.main([str(out), "--curve", str(out), "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "seed_claims.json").read_text())
    curve = next(d for d in data if d.get("kind") == "learning_curve")
    hist = sorted((out / "jobs" / "tiny" / "softmax" / "seed0" / "run").rglob("history.csv"))[0]
    with hist.open() as f:
        dice = [float(r["val_dice"]) for r in csv.DictReader(f)]
    want = next(i + 1 for i, d in enumerate(dice) if max(dice[i:]) - d <= 0.01)
    assert curve["plateau_epoch"] == want and len(curve["curve"]) == len(dice)
    doc = (tmp_path / "seed_claims.md").read_text()
    assert "## tiny: learning curve" in doc and f"more than 0.01 after epoch **{want}**" in doc

    first = doc.split("## tiny\n", 1)[1].split("\n## ", 1)[0]
    curve_body = doc.split("## tiny: learning curve\n", 1)[1].split("\n## ", 1)[0]
    note = "## Reading these results (written by hand, today)\n\n- a finding the script cannot write.\n"
    (tmp_path / "seed_claims.md").write_text(doc + "\n" + note)
    for _ in range(2):  # kept twice: one mark per section, the same bodies, the hand-written section once
        assert claims.main(["--keep", "tiny", "--out", str(tmp_path)]) == 0
    kept = (tmp_path / "seed_claims.md").read_text()
    assert kept.count("*Kept from an earlier run") == 2
    assert first.strip() in kept and curve_body.strip() in kept
    assert kept.count(note) == 1 and kept.rstrip().endswith(note.rstrip())
    entry = json.loads((tmp_path / "seed_claims.json").read_text())
    assert [(d["dataset"], d.get("kind")) for d in entry] == [("tiny", "learning_curve"), ("tiny", None)]
    assert all("kept_from" in d for d in entry)
    with pytest.raises(SystemExit, match="no such section"):
        claims.main(["--keep", "nope", "--out", str(tmp_path)])
