"""Where datasets live: one environment variable with a documented default.

``DEFVOS_DATA`` names a folder holding one sub-folder per dataset (``davis2016-train-240p/``,
``ecssd/``, ...); without it, ``./data`` under the current working directory is used.
Command-line tools take an explicit ``--data`` argument that wins over both.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "DEFVOS_DATA"
DEFAULT_DATA_DIR = Path("data")  # relative to the current working directory
DAVIS_NAME = "davis2016-train-240p"
ECSSD_NAME = "ecssd"
DUTS_NAME = "duts-tr"


def data_root() -> Path:
    """Return ``$DEFVOS_DATA``, else ``./data``."""
    value = os.environ.get(DATA_ENV, "").strip()
    return Path(value).expanduser() if value else DEFAULT_DATA_DIR


def dataset_root(name: str) -> Path:
    """Return the folder of dataset ``name`` under `data_root()` (it may not exist)."""
    return data_root() / name


def default_davis_root() -> Path:
    """Return the DAVIS-2016 240p training data folder under `data_root()`."""
    return dataset_root(DAVIS_NAME)


def default_ecssd_root() -> Path:
    """Return the ECSSD static-image folder under `data_root()`."""
    return dataset_root(ECSSD_NAME)
