"""``bench agent --published PATH``: the shim that times the published code's own loop, on a small
stand-in with the published module and class names (the published repository is not part of this
project), and the message when the path holds no published code."""

from __future__ import annotations

import textwrap

import pytest

from ccm_madrl.bench import PUBLISHED_SUBDIR, bench_published

STAND_IN_ENV = """
import numpy as np
class MecEnv:
    def __init__(self, n_agents, env_seed=None):
        np.random.seed(env_seed)
        self.n_agents, self.state_size, self.action_size = n_agents, 7, 3
        self.action_lower_bound, self.action_higher_bound = [0, 0.01, 0.01], [1, 1, 1]
    def reset_mec(self, eval_env_seed=None):
        self.t = 0
        return np.random.rand(self.n_agents, 7)
    def step_mec(self, action):
        self.t += 1
        return np.random.rand(self.n_agents, 7), np.zeros(self.n_agents), self.t >= 10, 0, 0
"""

STAND_IN_AGENT = """
import os, time
import numpy as np
from numpy import savetxt
class CCM_MADDPG:
    def __init__(self, InfdexofResult, env, env_eval, n_agents, state_dim, action_dim, action_lower_bound,
                 action_higher_bound, episodes_before_train=64, epsilon_decay=None):
        self.env, self.env_eval, self.n_episodes = env, env_eval, 0
        self.env_state = env.reset_mec()
    def interact(self, MAX_EPISODES, EPISODES_BEFORE_TRAIN, NUMBER_OF_EVAL_EPISODES):
        while self.n_episodes < MAX_EPISODES:
            self.env_state = self.env.reset_mec()
            if self.n_episodes >= EPISODES_BEFORE_TRAIN:
                self.evaluate(NUMBER_OF_EVAL_EPISODES)
            done = False
            while not done:
                _, _, done, _, _ = self.env.step_mec(None)
            self.n_episodes += 1
            if self.n_episodes >= EPISODES_BEFORE_TRAIN:
                self.train()
    def evaluate(self, n):
        assert n == 50
        time.sleep(0.02)
        savetxt("./CSV/results/CCM_MADRL0.csv", np.zeros(1))  # writes relative to the working directory
    def train(self):
        time.sleep(0.03)
"""


@pytest.mark.slow  # child interpreters importing torch: ~10 s each on a loaded 2-core machine
def test_published_loop_is_timed_through_its_own_functions(tmp_path):
    code = tmp_path / "checkout" / PUBLISHED_SUBDIR
    code.mkdir(parents=True)
    (code / "mec_env.py").write_text(textwrap.dedent(STAND_IN_ENV))
    (code / "CCM_MADRL.py").write_text(textwrap.dedent(STAND_IN_AGENT))
    res = bench_published(tmp_path / "checkout", episodes=2)
    assert "skipped" not in res, res
    assert res["episodes_measured"] == 2
    assert 20 <= res["eval_ms_median"] < 1000 and 30 <= res["train_step_ms_median"] < 1000
    assert min(res["episode_ms"]) >= 50  # each timed episode holds an evaluation and a training step
    assert not (code / "CSV").exists()  # its files went to a scratch directory

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "mec_env.py").write_text("raise ImportError('stand-in failure')\n")
    (tmp_path / "broken" / "CCM_MADRL.py").write_text("")
    res = bench_published(tmp_path / "broken")
    assert "failed" in res["skipped"] and "stand-in failure" in res["skipped"]


def test_absent_published_code_is_skipped_with_a_message(tmp_path):
    res = bench_published(tmp_path / "nowhere")
    assert "no published code" in res["skipped"]


def test_the_pack_benchmark_times_the_published_code_in_the_same_run(monkeypatch, tmp_path):
    """``bench agent --pack R --published PATH``: the published training episode over each pack's
    run-episode, one ratio per (update order, R); an absent checkout is recorded as skipped."""
    from ccm_madrl import bench
    from ccm_madrl.bench import published

    real = published.bench_published

    def timed(path, episodes=3):  # a stand-in for the child interpreter (slow; tested above)
        if "nowhere" in str(path):
            return real(path, episodes)
        return {"path": str(path), "episode_ms_median": 20_000.0, "episodes_measured": episodes}

    monkeypatch.setattr(published, "bench_published", timed)  # the module that calls it
    out = bench.bench_pack(
        packs=(1, 2),
        updates=("simultaneous",),
        monitors=(False,),
        episodes=5,
        eval_episodes=2,
        steps=2,
        published=("checkout", str(tmp_path / "nowhere")),
        published_episodes=2,
    )
    timed_res, skipped = out["published"]
    assert "no published code" in skipped["skipped"] and "run_episode_ratios" not in skipped
    got = {(r["actor_update"], r["runs_per_pack"]): r["ratio"] for r in timed_res["run_episode_ratios"]}
    want = {
        ("simultaneous", r["runs_per_pack"]): 20_000.0 / r["run_episode_ms_median"] for r in out["results"]
    }
    assert got == pytest.approx(want) and len(got) == 2 and all(v > 1 for v in got.values())
