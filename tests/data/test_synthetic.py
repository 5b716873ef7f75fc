"""Tests of the synthetic multi-rater generator: determinism, shapes, classes, rater disagreement and biases."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trustseg.core.config import from_dict
from trustseg.core.errors import ConfigError
from trustseg.data.case import Case
from trustseg.data.synthetic import (
    SynthConfig,
    SynthTruth,
    class_names,
    generate_case,
    generate_cases,
    make_synthetic_dataset,
)

CFG2 = SynthConfig(cases=12)
CFG3 = SynthConfig(cases=3, dims=3, size=32)


@pytest.fixture(scope="module")
def cases2d() -> list[tuple[Case, SynthTruth]]:
    return [generate_case(i, CFG2, return_truth=True) for i in range(CFG2.cases)]


def test_same_seed_same_case_and_different_seed_or_index_differs():
    a, b = generate_case(3, CFG2), generate_case(3, CFG2)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    other_seed = generate_case(3, dataclasses.replace(CFG2, seed=1))
    other_index = generate_case(4, CFG2)
    assert not np.array_equal(a.image, other_seed.image)
    assert not np.array_equal(a.labels, other_seed.labels)
    assert not np.array_equal(a.image, other_index.image)


def test_cases_do_not_depend_on_order():
    forward = list(generate_cases(dataclasses.replace(CFG2, cases=4)))
    backward = [generate_case(i, CFG2) for i in reversed(range(4))][::-1]
    for f, b in zip(forward, backward):
        assert f.case_id == b.case_id
        np.testing.assert_array_equal(f.image, b.image)
        np.testing.assert_array_equal(f.labels, b.labels)


@pytest.mark.parametrize("cfg", [CFG2, CFG3, SynthConfig(num_classes=5, raters=3), SynthConfig(num_classes=2)])
def test_shapes_dtypes_ranges_and_ids(cfg):
    case, truth = generate_case(7, cfg, return_truth=True)
    spatial = (cfg.size,) * cfg.dims
    assert case.case_id == "synth_0007" and case.group == "synth_0007"
    assert case.image.shape == (1, *spatial) and case.image.dtype == np.float32
    assert case.labels.shape == (cfg.raters, *spatial) and case.labels.dtype == np.int64
    assert case.labels.min() >= 0 and case.labels.max() < cfg.num_classes
    assert case.spacing == (1.0,) * cfg.dims
    assert truth.labels.shape == spatial and truth.faintness.shape == spatial
    assert truth.distance.shape == (cfg.num_classes - 1, *spatial)
    assert truth.rater_offsets.shape == (cfg.raters, *spatial)
    assert 0.0 <= truth.faintness.min() and truth.faintness.max() <= 1.0
    # every structure is a true, non-empty region
    assert set(np.unique(truth.labels)) == set(range(cfg.num_classes))
    # the image is z-scored
    assert abs(float(case.image.mean())) < 1e-4 and abs(float(case.image.std()) - 1.0) < 1e-3
    assert np.isfinite(case.image).all()


def test_every_class_present_in_most_cases(cases2d):
    present = np.array([[(c.labels == k).any() for k in range(3)] for c, _ in cases2d])
    assert present.mean(0).min() >= 0.9
    organ_fraction = np.mean([(t.labels > 0).mean() for _, t in cases2d])
    assert 0.1 < organ_fraction < 0.6


def test_structure_intensities_differ_from_background(cases2d):
    # mean intensity difference between classes, in units of the image std (a learnable contrast)
    for case, truth in cases2d:
        img = case.image[0]
        organ_only = img[truth.labels == 1].mean() - img[truth.labels == 0].mean()
        lesion_vs_organ = img[truth.labels == 2].mean() - img[truth.labels == 1].mean()
        assert organ_only > 0.5 and lesion_vs_organ > 0.3


def test_rater_disagreement_concentrates_at_faint_boundaries(cases2d):
    sums = np.zeros((2, 2))  # rows: faint, sharp; columns: summed rater variance, pixel count
    for case, truth in cases2d:
        var = case.rater_variance(CFG2.num_classes)
        band = truth.boundary_distance <= 2.5
        for row, sel in enumerate((band & (truth.faintness > 0.5), band & (truth.faintness < 0.2))):
            sums[row] += (var[sel].sum(), sel.sum())
    faint, sharp = sums[:, 0] / sums[:, 1]
    assert faint > 0.1
    assert faint > 3.0 * max(sharp, 1e-3)
    # away from every boundary the raters agree everywhere
    far = np.concatenate([c.rater_variance(3)[t.boundary_distance > 6] for c, t in cases2d])
    assert far.max() == 0.0


def test_image_edges_are_weaker_where_faint(cases2d):
    # gradient magnitude on the boundary band: lower where faint (the cue a model can learn the disagreement from)
    faint_g, sharp_g = [], []
    for case, truth in cases2d:
        g = np.hypot(*np.gradient(case.image[0]))
        band = truth.boundary_distance <= 1.0
        faint_g.append(g[band & (truth.faintness > 0.7)].mean())
        sharp_g.append(g[band & (truth.faintness < 0.2)].mean())
    assert np.nanmean(faint_g) < 0.7 * np.nanmean(sharp_g)


def test_rater_biases(cases2d):
    area = np.array([[(c.labels[r] > 0).sum() for r in range(CFG2.raters)] for c, _ in cases2d], dtype=float)
    mean = area.mean(0)
    assert mean[0] > mean[2:].max() and mean[2:].min() > mean[1]
    # case by case the over-segmenting rater marks more than the under-segmenting one
    assert (area[:, 0] >= area[:, 1]).all()
    # the true mask lies between the two biased raters on average
    true_area = np.mean([(t.labels > 0).sum() for _, t in cases2d])
    assert mean[1] < true_area < mean[0]


def test_single_rater_is_unbiased_and_agrees_at_sharp_edges():
    cfg = SynthConfig(raters=1, cases=4)
    for i in range(4):
        case, truth = generate_case(i, cfg, return_truth=True)
        assert case.labels.shape == (1, 64, 64)
        assert case.rater_variance(3).max() == 0.0
        sharp = truth.faintness < 0.05
        agree = (case.labels[0] == truth.labels)[sharp].mean()
        assert agree > 0.999


def test_no_faintness_means_perfect_agreement():
    cfg = SynthConfig(faint_fraction=0.0, cases=2)
    for i in range(2):
        case, truth = generate_case(i, cfg, return_truth=True)
        for r in range(cfg.raters):
            np.testing.assert_array_equal(case.labels[r], truth.labels)


def test_3d_cases_have_disagreement_and_all_classes():
    for i in range(CFG3.cases):
        case, truth = generate_case(i, CFG3, return_truth=True)
        assert case.labels.shape == (4, 32, 32, 32)
        assert set(np.unique(case.labels[2])) == {0, 1, 2}
        assert case.rater_variance(3)[truth.faintness > 0.5].sum() > 0


@pytest.mark.parametrize(
    ("field", "value"),
    [("raters", 0), ("dims", 4), ("size", 8), ("num_classes", 1), ("faint_fraction", 1.5), ("noise", -0.1)],
)
def test_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SynthConfig(**{field: value})


def test_lesion_radius_must_not_exceed_organ_radius_and_from_dict_works():
    with pytest.raises(ConfigError, match="lesion_radius"):
        SynthConfig(lesion_radius=0.3, organ_radius=0.2)
    cfg = from_dict(SynthConfig, {"cases": 5, "raters": "3", "dims": 3})
    assert (cfg.cases, cfg.raters, cfg.dims) == (5, 3, 3)
    assert isinstance(SynthConfig(cases=4.0).cases, int)
    with pytest.raises(ConfigError, match="cases"):
        SynthConfig(cases=2.5)
    with pytest.raises(ConfigError, match="noise"):
        SynthConfig(noise=float("nan"))
    with pytest.raises(ValueError, match="index"):
        generate_case(-1, CFG2)


def test_class_names():
    assert class_names(2) == ["background", "organ"]
    assert class_names(3) == ["background", "organ", "lesion"]
    assert class_names(5) == ["background", "organ", "lesion", "structure3", "structure4"]


def test_make_synthetic_dataset_round_trip(tmp_path):
    pytest.importorskip("trustseg.data.dataset")
    from trustseg.data.dataset import load_dataset

    cfg = SynthConfig(cases=5, raters=3, size=32)
    root = make_synthetic_dataset(tmp_path / "synth", cfg, ext=".npy")
    ds = load_dataset(root)
    assert len(ds) == 5
    for i in range(5):
        expected = generate_case(i, cfg)
        got = ds[i]
        assert got.case_id == expected.case_id
        np.testing.assert_allclose(got.image, expected.image, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got.labels, expected.labels)


def test_split_fractions_set_the_fixed_split_and_the_defaults_keep_the_old_one(tmp_path):
    """200 cases at val 0.28 / test 0.30 give 84 / 56 / 60 (each case its own group); the default fractions give
    exactly the dataset the generator wrote before the option existed (``default_splits`` at 70/15/15)."""
    from trustseg.data.dataset import default_splits, load_dataset

    cfg = SynthConfig(cases=200, size=16, raters=2, val_fraction=0.28, test_fraction=0.30)
    assert cfg.split_fractions == pytest.approx((0.42, 0.28, 0.30))
    ds = load_dataset(make_synthetic_dataset(tmp_path / "big", cfg, ext=".npy"))
    assert [len(ds.split(p)) for p in ("train", "val", "test")] == [84, 56, 60]
    small = SynthConfig(cases=40, size=16, raters=2)
    ds = load_dataset(make_synthetic_dataset(tmp_path / "default", small, ext=".npy"))
    ids = [f"synth_{i:04d}" for i in range(40)]
    assert {p: ds.split(p) for p in ("train", "val", "test")} == default_splits(ids, ids, small.seed)["fixed"]
    with pytest.raises(ConfigError, match="val_fraction"):
        SynthConfig(val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(ConfigError, match="test_fraction"):
        SynthConfig(test_fraction=-0.1)
