"""Gradient-flow monitor: model-agnostic diagnostics of when and why networks stop learning."""

from .core import ATTRIBUTION, GradientFlowMonitor, summarize
from .stops import agent_stops, run_stops

__all__ = ["GradientFlowMonitor", "summarize", "ATTRIBUTION", "agent_stops", "run_stops"]
