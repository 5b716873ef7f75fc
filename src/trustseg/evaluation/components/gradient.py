"""SURE's gradient interpretability metrics (principle 1: sharper edges, lower uncertainty), needing the image.

On the boundary band ``d ≤ band`` of the majority vote (:attr:`SuiteConfig.gradient_band`, 1 in spacing units;
full ``3^ndim`` boundary neighbourhood), with ``g = |∇x|`` the image gradient magnitude in spacing units:

* ``ucc_gradient/<map>/majority``: Spearman(g, u) (SURE expects a negative value, so lower is better);
* ``ur_gradient/<map>/majority``: the fraction of band pixel pairs where the higher gradient has the lower
  uncertainty (pairs with equal g skipped, equal u count 0; at most 200 000 pairs, seeded).

The noise-level and distance variants (UCC_d, UR_d, UR_μ) need re-prediction under noise and are not here.
"""

from __future__ import annotations

from typing import Any

from trustseg.evaluation.component import SuiteComponent, register
from trustseg.evaluation.context import CaseContext
from trustseg.evaluation.results import finite
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
        img, band, sp = ctx.image.float(), self.cfg.gradient_band, ctx.spacing
        out: dict[str, Any] = {"ucc_gradient": {}, "ur_gradient": {}}
        near, g = gradient_band(img, ctx.majority, band=band, spacing=sp)  # once per case, shared by the maps
        for name, u in ctx.maps.items():
            out["ucc_gradient"][name] = {"majority": finite(band_ucc_gradient(u, near, g))}
            out["ur_gradient"][name] = {"majority": finite(band_ur_gradient(u, near, g))}
        return out
