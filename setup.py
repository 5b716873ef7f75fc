"""Build of the optional C calibration kernel; all other metadata lives in pyproject.toml.

The extension is ``optional``: where no C compiler is available the install still succeeds and
``trustseg.metrics.calibration_state`` uses its pure-torch path (same numbers, slower).
"""

import sys

from setuptools import Extension, setup

args = ["/O2"] if sys.platform == "win32" else ["-O3", "-fvisibility=hidden"]

setup(
    ext_modules=[
        Extension(
            "trustseg.metrics._calibration_kernel",
            ["src/trustseg/metrics/_calibration_kernel.c"],
            extra_compile_args=args,
            optional=True,
        )
    ]
)
