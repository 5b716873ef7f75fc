"""The compiled calibration kernel gives the torch path's state: histograms bit for bit, NLL/Brier to float64.

The torch path itself is checked against torchmetrics, MONAI and scikit-learn in test_calibration.py (which
runs every test on both backends); here the two backends are compared on many input kinds, and the kernel's
NLL/Brier against float64 references.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trustseg.core.errors import ConfigError, DataError
from trustseg.metrics import calibration_kernel
from trustseg.metrics.calibration_state import calibration_state, metrics_from_state

needs_kernel = pytest.mark.skipif(
    not calibration_kernel.available(), reason=f"compiled calibration kernel: {calibration_kernel.why_unavailable()}"
)


def _both(probs, target, **kw):
    a = calibration_state(probs, target, backend="kernel", **kw)
    b = calibration_state(probs, target, backend="torch", **kw)
    return a, b


def _assert_same(a, b, rel=1e-6):
    torch.testing.assert_close(a["top"], b["top"], rtol=0, atol=1e-9)  # integer counts exact, Σconf float64
    torch.testing.assert_close(a["cls"], b["cls"], rtol=0, atol=1e-9)
    assert float(a["n"]) == float(b["n"])
    # the torch path rounds per-voxel logs and squares to float32 before its float64 sum
    for key in ("nll", "brier"):
        assert float(a[key]) == pytest.approx(float(b[key]), rel=rel, abs=1e-9)


def _binary(n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(n, generator=g, dtype=torch.float64).to(dtype)
    y = (torch.rand(n, generator=g) < p.double()).to(torch.uint8)
    return p, y


def _multi(k, n, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    p = torch.softmax(3 * torch.randn(k, n, generator=g, dtype=torch.float64), 0).to(dtype)
    y = torch.randint(0, k, (n,), generator=g)
    return p, y


@needs_kernel
@pytest.mark.parametrize("closed", ["left", "right", "torchmetrics"])
@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.bool, torch.int8, torch.int16, torch.int32, torch.int64])
def test_binary_hard_equals_torch(closed, label_dtype):
    p, y = _binary(70_001)
    a, b = _both(p, y.to(label_dtype), binary=True, closed=closed)
    _assert_same(a, b)


@needs_kernel
@pytest.mark.parametrize("closed", ["left", "right", "torchmetrics"])
@pytest.mark.parametrize("label_dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64])
def test_multiclass_hard_equals_torch(closed, label_dtype):
    p, y = _multi(5, 50_003)
    a, b = _both(p, y.to(label_dtype), closed=closed)
    _assert_same(a, b)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_soft_labels_and_float64_equal_torch(dtype):
    p, _ = _binary(30_001, dtype=dtype)
    t = torch.rand(30_001, generator=torch.Generator().manual_seed(3), dtype=torch.float64).to(dtype)
    t[::3] = t[::3].round()  # hard-looking voxels too (the kernel skips the log of a zero weight)
    _assert_same(*_both(p, t, binary=True))
    pm, ym = _multi(4, 30_001, dtype=dtype)
    soft = torch.softmax(torch.randn(4, 30_001, generator=torch.Generator().manual_seed(4), dtype=torch.float64), 0)
    _assert_same(*_both(pm, soft.to(dtype)))
    _assert_same(*_both(pm, ym))


@needs_kernel
@pytest.mark.parametrize(
    "kw",
    [
        {"toplabel": False, "classes": [1]},
        {"toplabel": True, "classes": False},
        {"toplabel": False, "classes": False},
        {"classes": [0, 2]},
        {"bins": 7, "ace_resolution": 100},
        {"bins": 1},
    ],
)
def test_options_equal_torch(kw):
    p, y = _multi(3, 20_000)
    _assert_same(*_both(p, y, **kw))
    pb, yb = _binary(20_000)
    kw_b = {**kw, "classes": [c for c in kw["classes"] if c < 2]} if isinstance(kw.get("classes"), list) else kw
    _assert_same(*_both(pb, yb, binary=True, **kw_b))


@needs_kernel
def test_exact_edges_ties_and_extremes():
    # confidences exactly on bin edges (incl. 0, 0.5 and 1), ties between classes, probabilities below eps
    edges = torch.tensor([0.0, 1 / 15, 2 / 15, 0.5, 14 / 15, 1.0, 1e-30, 1 - 2**-24], dtype=torch.float32)
    p = edges.repeat(1001)
    y = torch.arange(p.numel()) % 2
    for closed in ("left", "right", "torchmetrics"):
        _assert_same(*_both(p, y, binary=True, closed=closed, bins=15))
    tie = torch.tensor([[0.4, 0.2, 0.5, 1.0], [0.4, 0.4, 0.5, 0.0], [0.2, 0.4, 0.0, 0.0]]).repeat(1, 257)
    yt = torch.arange(tie.shape[1]) % 3
    a, b = _both(tie, yt)
    _assert_same(a, b)
    assert metrics_from_state(a)["ece_toplabel"] == metrics_from_state(b)["ece_toplabel"]


@needs_kernel
def test_nll_and_brier_match_float64_references_closely():
    p, y = _multi(4, 100_000)
    st = calibration_state(p, y, backend="kernel")
    pd, yd = p.double().numpy(), y.numpy()
    py = np.maximum(pd[yd, np.arange(yd.size)], np.finfo(np.float32).eps)
    assert float(st["nll"]) == pytest.approx(-np.log(py).sum(), rel=1e-12)
    onehot = np.eye(4)[yd].T
    assert float(st["brier"]) == pytest.approx(((pd - onehot) ** 2).sum(), rel=1e-12)
    # underflow guard: every probability of the true class far below eps -> NLL = -ln(eps) per voxel
    tiny = torch.full((10_000,), 1e-30)
    st = calibration_state(tiny, torch.ones(10_000, dtype=torch.uint8), binary=True, backend="kernel")
    assert float(st["nll"]) == pytest.approx(10_000 * -math.log(torch.finfo(torch.float32).eps), rel=1e-12)


@needs_kernel
@pytest.mark.parametrize("n", [1, 2, 3, 65_535, 65_536 * 3 + 1])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_lengths_and_thread_splits(n, workers):
    p, y = _binary(n, seed=n)
    a = calibration_state(p, y, binary=True, backend="kernel", workers=workers)
    _assert_same(a, calibration_state(p, y, binary=True, backend="torch"))
    pm, ym = _multi(3, n, seed=n)
    _assert_same(
        calibration_state(pm, ym, backend="kernel", workers=workers), calibration_state(pm, ym, backend="torch")
    )


@needs_kernel
def test_batched_views_and_non_contiguous_inputs():
    g = torch.Generator().manual_seed(5)
    p = torch.softmax(torch.randn(3, 4, 9, 11, generator=g), 1)
    y = torch.randint(0, 4, (3, 9, 11), generator=g)
    _assert_same(*_both(p, y, batched=True))
    pt = p[0].transpose(1, 2)  # (K, 11, 9) non-contiguous: reshaped by a copy, same state
    _assert_same(*_both(pt, y[0].T))


@needs_kernel
@pytest.mark.parametrize(
    "make, binary, message",
    [
        (lambda p, y: (p.index_fill(0, torch.tensor([70_000]), math.nan), y), True, "NaN or inf"),
        (lambda p, y: (p.index_fill(0, torch.tensor([5]), 1.5), y), True, r"outside \[0, 1\]"),
        (lambda p, y: (p, y.index_fill(0, torch.tensor([9]), 2)), True, "must be 0 or 1"),
    ],
)
def test_invalid_binary_input_raises_the_torch_paths_error(make, binary, message):
    p, y = make(*_binary(100_000))
    for backend in ("kernel", "torch"):
        with pytest.raises(DataError, match=message) as err:
            calibration_state(p, y, binary=binary, backend=backend)
        if backend == "kernel":
            first = str(err.value)
    assert first == str(err.value)


@needs_kernel
def test_invalid_multiclass_input_raises_the_torch_paths_error():
    p, y = _multi(3, 100_000)
    cases = [
        (p.clone().index_fill(1, torch.tensor([99_999]), math.nan), y, "NaN or inf"),
        (p * 1.01, y, "do not sum to 1"),
        (p, y.index_fill(0, torch.tensor([3]), 3), "must lie in"),
        (p, torch.stack([1 - p[0], p[0], 0 * p[0]]) * 2, "soft labels do not sum"),
    ]
    neg = p.clone()
    neg[:, 7] = torch.tensor([1.5, -0.25, -0.25])
    cases.append((neg, y, "negative"))
    for probs, target, message in cases:
        msgs = []
        for backend in ("kernel", "torch"):
            with pytest.raises(DataError, match=message) as err:
                calibration_state(probs, target, backend=backend)
            msgs.append(str(err.value))
        assert msgs[0] == msgs[1]


def test_backend_option_is_checked(monkeypatch):
    p, y = _binary(10)
    with pytest.raises(ConfigError, match="backend"):
        calibration_state(p, y, binary=True, backend="fast")
    monkeypatch.setattr(calibration_kernel, "available", lambda: False)
    monkeypatch.setattr(calibration_kernel, "why_unavailable", lambda: "not built (test)")
    with pytest.raises(ConfigError, match="not built"):
        calibration_state(p, y, binary=True, backend="kernel")
    assert calibration_state(p, y, binary=True)["n"] == 10  # auto falls back to torch


def _forget_loaded_kernel(monkeypatch):
    """Make the next available() load afresh; monkeypatch restores the loaded kernel after the test."""
    for name in ("_loaded", "_lib", "_why_not"):
        monkeypatch.setattr(calibration_kernel, name, getattr(calibration_kernel, name))
    calibration_kernel._loaded, calibration_kernel._lib = False, None


def test_disabled_by_environment(monkeypatch):
    _forget_loaded_kernel(monkeypatch)
    monkeypatch.setenv("TRUSTSEG_NO_KERNEL", "1")
    assert not calibration_kernel.available()
    assert "TRUSTSEG_NO_KERNEL" in calibration_kernel.why_unavailable()
    p, y = _binary(100)
    assert float(calibration_state(p, y, binary=True)["n"]) == 100


@needs_kernel
def test_stale_build_warns_and_falls_back(monkeypatch):
    _forget_loaded_kernel(monkeypatch)
    monkeypatch.delenv("TRUSTSEG_NO_KERNEL", raising=False)
    monkeypatch.setattr(calibration_kernel, "KERNEL_VERSION", -1)
    with pytest.warns(UserWarning, match="stale build"):
        assert not calibration_kernel.available()
    p, y = _binary(100)
    assert float(calibration_state(p, y, binary=True)["n"]) == 100


def test_unsupported_inputs_go_to_torch():
    p, y = _binary(1000)
    assert not calibration_kernel.supports(p.half(), y, True)
    assert not calibration_kernel.supports(p, y.double(), True)  # soft label of another dtype
    assert not calibration_kernel.supports(p[::2], y[::2].contiguous(), True)
    st = calibration_state(p.half(), y, binary=True)  # float16 runs on the torch path (cast per chunk)
    assert float(st["n"]) == 1000


@needs_kernel
def test_probability_above_one_within_tolerance_stays_in_the_last_slot():
    # a K-class p_k may exceed 1 by up to sum_tol; in torchmetrics mode it joins the c = 1 slot on both paths
    p = torch.tensor([[1.00009, 0.2], [0.0, 0.8]], dtype=torch.float32).repeat(1, 50)
    y = torch.zeros(100, dtype=torch.long)
    for closed in ("left", "right", "torchmetrics"):
        a, b = _both(p, y, closed=closed, bins=15, ace_resolution=20_000)
        _assert_same(a, b)
        assert float(a["top"][0].sum()) == 100


def test_ranges_are_split_below_the_packed_counter_limit(monkeypatch):
    if not calibration_kernel.available():
        pytest.skip(f"compiled calibration kernel: {calibration_kernel.why_unavailable()}")
    monkeypatch.setattr(calibration_kernel, "MAX_CALL", 1000)  # as if the volume had billions of voxels
    p, y = _binary(10_007)
    _assert_same(*_both(p, y, binary=True, workers=2))
