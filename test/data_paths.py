"""Where the tests find the real datasets: one rule for every test module.

`$DEFVOS_DATA` (the product's data variable, `defvos_core.data.roots`) when it is set,
else `<repo>/../shared/data`, where this project's checkouts and CI find the shared copies.
Tests that need a dataset skip, naming the folder, when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

from defvos_core.data.roots import DATA_ENV, DAVIS_NAME, DUTS_NAME, ECSSD_NAME

REPO = Path(__file__).resolve().parents[1]
DATA = (Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV, "").strip()
        else REPO.parent / "shared" / "data")
DAVIS = DATA / DAVIS_NAME
ECSSD = DATA / ECSSD_NAME
DUTS = DATA / DUTS_NAME


def missing(*folders: Path) -> str:
    """Return the skip reason for absent dataset folders ('' when all are there)."""
    absent = [str(folder) for folder in folders if not folder.is_dir()]
    return (f"{', '.join(absent)} not available (set ${DATA_ENV} to the folder holding "
            f"{DAVIS_NAME}/ and {ECSSD_NAME}/)" if absent else "")
