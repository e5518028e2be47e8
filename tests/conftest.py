import gzip
import json
import os
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# The machine running CI has few cores; keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def official_keys():
    """Official state-dict key names, shapes and dtypes per architecture (see tests/data)."""
    with gzip.open(DATA / "official_state_dict_keys.json.gz", "rt") as f:
        return json.load(f)
