"""Built-in comparison presets: a config mapping by name (``trustseg compare --preset NAME``).

A preset is the mapping of a ``compare.yaml`` (so CLI flags and ``--set`` apply to it as to a file). ``demo`` is
what ``trustseg demo`` and ``make demo`` run: today's demo methods on seeded synthetic 2D data (72 cases, 4 raters,
64²: 11 validation cases, enough for a QC model), one seed, the whole evaluation (OOD with two distortions at
severity 3, SURE's noise protocol at its lowest and highest level, QC), sized to finish in a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import copy
from typing import Any

from trustseg.core.registry import Registry

#: name -> a function returning the preset's config mapping.
PRESETS: Registry = Registry("compare preset")

#: The demo's methods (label, params); every one trains ``train.epochs`` (30) epochs.
DEMO_METHODS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("softmax", {}),
    ("mc-dropout", {}),
    ("ensemble", {"members": 3}),
    ("layer-ensemble", {}),
    ("evidential", {}),
    ("edue", {}),
)


@PRESETS.register("demo", doc="synthetic 2D (72 cases, 4 raters), 6 methods x 30 epochs, 1 seed, OOD+noise+QC")
def demo(seed: int = 0) -> dict[str, Any]:
    """The demo comparison's config mapping (data and training seeded with ``seed``)."""
    return {
        "datasets": [
            {"name": "synthetic2d", "synth": {"cases": 72, "raters": 4, "dims": 2, "size": 64, "num_classes": 3,
                                               "seed": seed}}
        ],
        "methods": [{"name": n, "params": copy.deepcopy(p)} for n, p in DEMO_METHODS],
        "seeds": [seed],
        "net": {"name": "unet", "params": {"channels": [16, 32, 64], "norm": "instance"}},
        "train": {"epochs": 30, "batch_size": 8, "lr": 3e-3},
        "ood": {"distortions": ["noise", "blur"], "severities": [3], "seed": seed},
        "noise": {"levels": [0.1, 0.9], "seed": seed},
        "qc": {"enabled": True, "min_cases": 10},
        "baseline": "softmax",
    }  # fmt: skip


def preset(name: str, **kwargs: Any) -> dict[str, Any]:
    """The config mapping of preset ``name`` (unknown names: "did you mean")."""
    return PRESETS.get(name)(**kwargs)
