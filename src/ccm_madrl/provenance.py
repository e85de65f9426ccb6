"""How a result was made: package version, source commit, library versions, machine and device."""

from __future__ import annotations

import functools
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__


@functools.lru_cache(maxsize=1)
def source_commit() -> dict:
    """Git commit of the package's source tree, and whether that tree (this package's directory, not
    the rest of the repository: results, docs) had uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", "."],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        )
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": os.environ.get("CCM_MADRL_COMMIT", "unknown"), "dirty": None}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: 'cuda' requested but no CUDA device is available (use 'cpu' or 'auto')")
    return torch.device(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def ray_node() -> str | None:
    """The Ray node id when this process is a Ray worker (a sweep's ``ray`` backend), else None:
    each segment of a run records the node it ran on, so a run resumed elsewhere after its node was
    lost shows both."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    try:
        return ray.get_runtime_context().get_node_id()
    except Exception:  # pragma: no cover - a Ray without a runtime context: nothing to record
        return None


def collect(device: torch.device | None = None) -> dict:
    dev = device or torch.device("cpu")
    return {
        "package": "ccm_madrl",
        "version": __version__,
        **source_commit(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "torch": torch.__version__,
        "device": str(dev),
        "device_name": device_name(dev),
        "torch_threads": torch.get_num_threads(),
        "hostname": socket.gethostname(),
        "ray_node": ray_node(),
        "platform": platform.platform(),
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv,
    }
