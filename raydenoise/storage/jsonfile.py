"""Strict JSON for the files raydenoise writes (summaries, configs, tables): no NaN, no numpy."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has no such numbers:
    Python would write bare ``NaN``, which other readers reject), numpy scalars made plain."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_json(value: Any) -> bytes:
    """Strict JSON bytes (indented): non-finite numbers become null, see json_safe."""
    return json.dumps(json_safe(value), indent=2, allow_nan=False, default=str).encode()
