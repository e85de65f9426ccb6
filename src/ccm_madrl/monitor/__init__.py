"""Gradient-flow monitor: model-agnostic diagnostics of when and why networks stop learning.

The measuring part (``core.py``, ``integration.py``) needs torch; the reading part (``stops.py``,
``compact.py``) does not, and importing it loads no torch: the names below are imported on first
use (PEP 562)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .core import ATTRIBUTION, GradientFlowMonitor, summarize
    from .stops import agent_stops, run_stops

_WHERE = {
    "ATTRIBUTION": "core",
    "GradientFlowMonitor": "core",
    "summarize": "core",
    "agent_stops": "stops",
    "run_stops": "stops",
}

__all__ = ["GradientFlowMonitor", "summarize", "ATTRIBUTION", "agent_stops", "run_stops"]


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _WHERE[name] == "core":
        from . import core as module
    else:
        from . import stops as module
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
