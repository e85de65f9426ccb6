"""``ccm-madrl bench argmax``: the bounded row skipping of the actor loss's maximum over real runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..experiment.callbacks import Callback
from .common import _started, sequential_step_profile
from .options import ArgmaxBench

ARGMAX = ArgmaxBench()  # the defaults


def row_summary(per: np.ndarray) -> dict:
    """The row-skipping statistics of one run from its training steps' rows ``per`` (episode, rows,
    rows evaluated, train seconds). Quarters are taken over the steps there are (fewer than four
    steps: one value per step), so no statistic is the mean of an empty slice (NumPy's warnings)."""
    if not len(per):
        raise ValueError("bench argmax: the run trained no step (more --episodes)")
    frac = 1 - per[:, 2] / per[:, 1]
    return {
        "training_steps": len(per),
        "rows_skipped_fraction": float(1 - per[:, 2].sum() / per[:, 1].sum()),
        "rows_skipped_fraction_by_quarter": [
            float(q.mean()) for q in np.array_split(frac, min(4, len(frac)))
        ],
        "rows_skipped_fraction_min": float(frac.min()),
        "rows_per_training_step_median": float(np.median(per[:, 1])),
        "train_step_ms_median_in_run": 1e3 * float(np.median(per[:, 3])),
    }


def bench_argmax(
    lrs: tuple[float, ...] = ARGMAX.lrs,
    episodes: int = ARGMAX.episodes,
    eval_every: int = ARGMAX.eval_every,
    seed: int = ARGMAX.seed,
) -> dict:
    """The bounded row skipping over real runs (published sequential order, N = 50, 10 steps, the
    skipping on), one per actor learning rate: the fraction of the maximum's candidate rows skipped in every training
    step, the training step's time in the run, and at the end the step on one replay batch with the
    skipping off and on (:func:`sequential_step_profile`). Evaluation every ``eval_every`` episodes
    (it does not touch the learner; in reference mode it changes the training stream)."""
    import tempfile

    from ..experiment.config import build_config
    from ..experiment.runner import Trainer

    class Rows(Callback):
        def __init__(self, learner):
            self.learner, self.last, self.per_episode = learner, [0, 0], []

        def on_episode_end(self, trainer, row) -> bool:
            now = list(self.learner.argmax_rows)
            rows, ev = now[0] - self.last[0], now[1] - self.last[1]
            self.last = now
            if rows:
                self.per_episode.append((row["episode"], rows, ev, row["time_train_s"]))
            return True

    out, peak, peak_cpu = _started(episodes=episodes, eval_every=eval_every)
    for lr in lrs:
        cfg = build_config(
            {
                "seed": seed,
                "threads": torch.get_num_threads(),
                "agent": {"actor_lr": lr, "argmax_row_skip": True},
                "training": {
                    "episodes": episodes,
                    "eval_every": eval_every,
                    "tensorboard": False,
                    "checkpoint_every": 10**6,
                },
                "monitor": {"enabled": False},
            }
        )
        rec: list = []

        def callbacks(trainer, rec=rec):
            rec.append(Rows(trainer.learner))
            return rec[:]

        with tempfile.TemporaryDirectory() as d:
            tr = Trainer(cfg, Path(d) / "run", progress=False, quiet=True, callbacks=callbacks)
            summary = tr.run()
            prof = sequential_step_profile(tr.learner, peak, peak_cpu_gflops=peak_cpu)
        per = np.array(rec[0].per_episode, dtype=float).reshape(-1, 4)
        out["results"].append(
            {
                "actor_lr": lr,
                **row_summary(per),
                "final_return": summary.final_return,
                **prof,
            }
        )
    return out
