"""Importers: convert users' dataset layouts into the trustseg layout (:mod:`trustseg.data.dataset`).

Importers convert (copy into ``images/``, ``labels/`` and ``dataset.json``) rather than index the source in place:

* one reader path for every later step (training, prediction, evaluation) whatever the source layout;
* every file is read and validated once, at import time, so broken files are reported up front with their
  name instead of in the middle of a training run;
* the result is written atomically with its splits, and the source folder is never modified;
* the cost is one copy on disk (the LIDC slices: about 20,000 small PNGs).

Each importer is a function ``fn(src, out, *, name=..., seed=0, progress=False, **options) -> Path`` registered
in :data:`IMPORTERS`; :func:`import_dataset` looks it up by name (with a "did you mean" on typos) and checks the
options.
"""

from trustseg.data.importers import folder, lidc, nnunet, qubiq
from trustseg.data.importers.registry import IMPORTERS, LazyCases, import_dataset

#: The importer modules (each registers itself in :data:`IMPORTERS` on import).
MODULES = (folder, lidc, nnunet, qubiq)

__all__ = ["IMPORTERS", "MODULES", "LazyCases", "import_dataset"]
