"""The callback contract (:class:`Callback`: the points at which the trainer calls a callback;
``experiment/callbacks.py`` describes them and holds the built-in callbacks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runner import Trainer


class Callback:
    """Does nothing at every point; subclasses override what they need."""

    state_key: str | None = None

    def on_run_start(self, trainer: Trainer, start: int) -> None:
        pass

    def on_episode_start(self, trainer: Trainer, episode: int) -> None:
        pass

    def on_episode_end(self, trainer: Trainer, row: dict) -> bool:
        return True

    def on_checkpoint(self, trainer: Trainer) -> None:
        pass

    def on_run_end(self, trainer: Trainer) -> dict:
        return {}

    def close(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, sd: dict, episodes_done: int) -> None:
        pass
