"""SURE's gradient interpretability metrics (principle 1: sharper edges, lower uncertainty), needing the image.

On the boundary band ``d ≤ band`` of the majority vote (:attr:`SuiteConfig.gradient_band`, 1 in spacing units;
full ``3^ndim`` boundary neighbourhood), with ``g = |∇x|`` the image gradient magnitude in spacing units:

* ``ucc_gradient/<map>/majority``: Spearman(g, u) (SURE expects a negative value, so lower is better);
* ``ur_gradient/<map>/majority``: the fraction of band pixel pairs where the higher gradient has the lower
  uncertainty (pairs with equal g skipped, equal u count 0; at most 200 000 pairs, seeded).

Computed on the bounding box of the majority's non-background voxels grown by ``2 + ⌈band / spacing⌉`` voxels per
axis: every boundary voxel has a non-background voxel within one voxel, every band voxel is within the band of
one, and the gradient at a band voxel reads its direct neighbours only, so the band, its gradients and the maps
on it are the whole volume's (the same voxels in the same order: the same values).

The noise-level and distance variants (UCC_d, UR_d, UR_μ) need re-prediction under noise and are not here.
"""

from __future__ import annotations

import math
from typing import Any

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite
from trustseg.measures.aggregate import foreground_box
from trustseg.metrics.uncertainty_quality import band_ucc_gradient, band_ur_gradient, gradient_band


@register
class GradientInterpretability(SuiteComponent):
    """SURE's UCC_g and UR_g of each map on the boundary band of the majority vote (module docstring)."""

    name = "sure_gradient"
    order = 9
    requires = frozenset({"maps", "image", "labels", "spacing"})
    higher_is_better = {"ucc_gradient": False, "ur_gradient": True}

    def per_case(self, ctx: CaseContext) -> dict[str, Any]:
        if min(ctx.majority.shape) < 2:  # the gradient needs two voxels along every axis
            return {}
        assert ctx.image is not None  # "image" is in requires
        band, sp = self.cfg.gradient_band, ctx.spacing
        out: dict[str, Any] = {"ucc_gradient": {}, "ur_gradient": {}}
        pad = [2 + math.ceil(max(band, 0.0) / s) for s in sp]
        box = foreground_box(ctx.majority != 0, pad)
        if box is not None and min(box[d].stop - box[d].start for d in range(len(box))) < 2:
            box = None  # the gradient needs two voxels along every axis: the whole volume
        crop = (slice(None),) * ctx.majority.dim() if box is None else box
        # once per case, shared by the maps
        near, g = gradient_band(ctx.image[(slice(None), *crop)].float(), ctx.majority[crop], band=band, spacing=sp)
        for name, full in ctx.maps.items():
            u = full[crop]
            out["ucc_gradient"][name] = {"majority": finite(band_ucc_gradient(u, near, g))}
            out["ur_gradient"][name] = {"majority": finite(band_ur_gradient(u, near, g))}
        return out
