"""Strict JSON for every file the package writes: NaN and +-inf become ``null`` (bare ``NaN`` is
not JSON and strict parsers reject it), NumPy scalars and arrays become numbers and lists, anything
else unknown its ``str``. ``json.dumps(..., allow_nan=False)`` guarantees nothing non-standard gets
through. Files are written by ``rundir.write_json`` (atomically, never through a link)."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def plain(obj: Any) -> Any:
    """``obj`` with non-finite floats as None, NumPy values as Python ones, tuples as lists."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return plain(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see the module docstring)."""
    return json.dumps(plain(obj), indent=indent, allow_nan=False)
