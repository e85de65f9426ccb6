"""The MEC system's config: :class:`ccm_madrl.config.mec.MECConfig` (the config layer), re-exported."""

from ..config.mec import MECConfig

__all__ = ["MECConfig"]
