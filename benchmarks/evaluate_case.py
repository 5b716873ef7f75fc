"""The seeded synthetic 3D case of the evaluation cost benchmarks (issue 14), built one slice at a time.

Two organs (spheres, classes 1 and 2) in a ``(D, H, W)`` volume, ``R`` raters whose radii differ by a few percent
and whose boundaries are perturbed by a smooth field (so they disagree on a band, as real raters do), and a
prediction like a trained network's:

* ``smooth=True`` (default): logits ``-1.5 · clip(signed distance / 2, ±4)`` per organ plus a smooth random field
  (three sinusoids with random phases, amplitude 0.8) and white noise of sd 0.2: errors and uncertainty sit on
  the organ boundaries, the hard map is compact;
* ``smooth=False``: the noisy case of ``bench_memory_evaluate.py`` (one-hot logits × 3 + white noise of sd 1.5):
  salt-and-pepper errors everywhere, the worst case for the surface metrics.

Returns probabilities ``(K=3, D, H, W)`` float32, rater maps ``(R, D, H, W)`` int64, maps ``entropy``,
``confidence`` and ``variance`` (float32), ``M`` samples ``(M, K, D, H, W)`` float32 and a ``(1, D, H, W)`` image.
"""

from __future__ import annotations

import math

import torch

K = 3
CENTRES = [(0.5, 0.4, 0.4, 0.25), (0.5, 0.65, 0.6, 0.15)]  # (z, y, x, radius) as fractions of the shape


def build(shape: tuple[int, int, int], seed: int = 0, raters: int = 3, samples: int = 2, smooth: bool = True) -> dict:
    """The case (module docstring): ``{"probs", "labels", "maps", "samples", "image"}``."""
    d, h, w = shape
    g = torch.Generator().manual_seed(seed)
    probs = torch.empty(K, d, h, w)
    labels = torch.empty(raters, d, h, w, dtype=torch.long)
    samp = torch.empty(samples, K, d, h, w)
    image = torch.empty(1, d, h, w)
    maps = {name: torch.empty(d, h, w) for name in ("entropy", "confidence", "variance")}
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    phases = torch.rand(3, 3, generator=g) * 2 * math.pi  # smooth field: 3 sinusoids, (phase z, y, x)
    rater_phase = torch.rand(raters, 2, generator=g) * 2 * math.pi
    scale = max(shape)
    for z in range(d):
        field = sum(
            torch.sin(2 * math.pi * (z * (j + 1) / scale) + phases[j, 0])
            * torch.sin(2 * math.pi * yy * (j + 1) / scale + phases[j, 1])
            * torch.sin(2 * math.pi * xx * (j + 2) / scale + phases[j, 2])
            for j in range(3)
        )
        logits = torch.zeros(K, h, w)
        seg = torch.zeros(h, w, dtype=torch.long)
        rater = torch.zeros(raters, h, w, dtype=torch.long)
        for c, (cz, cy, cx, rad) in enumerate(CENTRES, start=1):
            dist = ((z - cz * d) ** 2 + (yy - cy * h) ** 2 + (xx - cx * w) ** 2) ** 0.5  # voxels
            r_vox = rad * min(shape)
            seg[dist < r_vox] = c
            logits[c] = -1.5 * ((dist - r_vox) / 2).clamp(-4, 4)
            for r in range(raters):
                wobble = 1.5 * torch.sin(yy / 7 + rater_phase[r, 0]) * torch.cos(xx / 9 + rater_phase[r, 1])
                rater[r][dist < r_vox * (0.95 + 0.05 * r) + wobble] = c
        if smooth:
            logits += 0.8 * field + 0.2 * torch.randn(K, h, w, generator=g)
        else:
            logits = 3.0 * torch.nn.functional.one_hot(seg, K).movedim(-1, 0).float()
            logits += 1.5 * torch.randn(K, h, w, generator=g)
        p = torch.softmax(logits, 0)
        probs[:, z] = p
        labels[:, z] = rater
        for m in range(samples):
            samp[m, :, z] = torch.softmax(logits + 0.5 * torch.randn(K, h, w, generator=g), 0)
        image[0, z] = seg.float() + 0.3 * torch.randn(h, w, generator=g)
        maps["entropy"][z] = -(p * p.clamp_min(1e-12).log()).sum(0)
        maps["confidence"][z] = p.max(0).values
        maps["variance"][z] = samp[:, :, z].var(0, unbiased=False).sum(0)
    return {"probs": probs, "labels": labels, "samples": samp, "image": image, "maps": maps}
