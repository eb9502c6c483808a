"""Test configuration: make ``tests/helpers.py`` importable and set hypothesis profiles."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Plans touch the file system and polars; examples are slower than a pure function's.
settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.register_profile("thorough", parent=settings.get_profile("default"))  # helpers.examples() scales counts
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
