"""The gradient-flow monitor inside other libraries' training loops (optional extra ``cross``).

- :mod:`ccm_madrl.integrations.sb3`: a Stable-Baselines3 callback for DDPG, TD3 and SAC;
- :mod:`ccm_madrl.integrations.benchmarl`: a BenchMARL callback for MADDPG, IDDPG and MASAC;
- :class:`MonitorSession` (here; defined in :mod:`ccm_madrl.monitor.integration`, the one session of
  every loop, ``ccm-madrl train``'s too): what both share, usable in a plain PyTorch loop.

Each is a thin adapter over :class:`ccm_madrl.monitor.GradientFlowMonitor`: it decides which modules
and optimisers to watch and when a measurement unit begins and ends, and writes the same run
directory tables as ``ccm-madrl train`` (``monitor/agents/part-*.parquet``, ``monitor/summary.json``;
the callbacks also ``config.yaml``, ``status.json``, ``provenance.json``: ``session.LibraryRun``).
"""

from .session import MonitorSession

__all__ = ["MonitorSession"]
