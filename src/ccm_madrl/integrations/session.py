"""The monitor session of another library's loop: :class:`ccm_madrl.monitor.integration.MonitorSession`,
the one session of every loop (re-exported here, where the integrations import it)."""

from __future__ import annotations

from ..monitor.integration import MonitorSession

__all__ = ["MonitorSession"]
