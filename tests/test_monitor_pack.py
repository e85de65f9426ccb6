"""A run in a pack measures ``weight_difference`` from its own first weights, as alone, also when
the pack is made again after another run left it (issue #37)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ccm_madrl.experiment import Trainer, build_config
from ccm_madrl.experiment.engine import PackedBatch
from ccm_madrl.experiment.pack import PackTrainer
from ccm_madrl.monitor.integration import read_agents
from test_pack import configs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EPISODES, POISON = 8, 5  # run r1 leaves the pack after episode 5


def _pack_with_a_run_leaving(tmp_path, monkeypatch) -> list:
    cfgs = [
        build_config({**c.model_dump(mode="json"), "monitor": {"enabled": True}})
        for c in configs(episodes=EPISODES)[:3]
    ]
    real = PackTrainer.episode

    def leaving(self, ep):  # r1 is marked diverged in episode POISON: the pack is made again without it
        rows = real(self, ep)
        names = [m.cfg.name for m in self.members]
        if ep == POISON and "r1" in names:
            self.batch.mark_diverged(np.array([n == "r1" for n in names]), "made to leave")
        return rows

    monkeypatch.setattr(PackTrainer, "episode", leaving)
    summaries = PackTrainer(cfgs, [tmp_path / "pack" / c.name for c in cfgs]).run()
    assert [s.state for s in summaries] == ["done", "diverged", "done"]
    return cfgs


def _weight_difference(run_dir) -> pd.DataFrame:
    a = read_agents(run_dir / "monitor")
    return a[a["episode"] > POISON].sort_values(["episode", "role", "agent"])


def test_weight_difference_counts_from_each_runs_first_weights_after_the_pack_is_made_again(
    tmp_path, monkeypatch
):
    """Run r2 goes on in a pack made again after r1 diverged: its ``weight_difference`` equals the
    run alone (relative 1e-4; the pack's float32 sums run in another order); a pack that counted
    from the weights at its remaking (the check can fail) differs from it by far more."""
    c = _pack_with_a_run_leaving(tmp_path / "fixed", monkeypatch)[2]
    Trainer(c, tmp_path / "alone" / c.name, progress=False, quiet=True).run()
    alone = _weight_difference(tmp_path / "alone" / c.name)
    packed = _weight_difference(tmp_path / "fixed" / "pack" / c.name)
    assert len(alone) == len(packed) > 0
    for col in ("weight_difference", "weight_difference.fc1"):
        x, y = alone[col].to_numpy(float), packed[col].to_numpy(float)
        assert (x > 0).all()
        np.testing.assert_allclose(y, x, rtol=1e-4)
    monkeypatch.setattr(PackedBatch, "_initial_weights", lambda self, members: None)
    _pack_with_a_run_leaving(tmp_path / "from_remaking", monkeypatch)
    other = _weight_difference(tmp_path / "from_remaking" / "pack" / c.name)
    x, y = alone["weight_difference"].to_numpy(float), other["weight_difference"].to_numpy(float)
    assert np.max(np.abs(y - x) / x) > 1e-2
