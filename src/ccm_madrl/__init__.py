"""ccm_madrl: the Client-Master MADRL system for MEC task offloading, a gradient-flow monitor for
any PyTorch actor-critic, and the tools to study why actors stop learning."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ccm_madrl")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
