"""The plain-PyTorch recipe of docs/monitor.md ("In your own training loop"): a CleanRL-style DDPG
on Pendulum-v1 with the three added lines records the monitor's tables and trains exactly as
without them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ccm_madrl.integrations import MonitorSession
from ccm_madrl.monitor.integration import read_agents


def _ddpg(steps: int, run_dir=None, seed: int = 0, actor_lr: float = 0.1):
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    env = gym.make("Pendulum-v1")
    actor = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 1), nn.Tanh())
    qf = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))
    actor_opt = torch.optim.Adam(actor.parameters(), lr=actor_lr)
    q_opt = torch.optim.Adam(qf.parameters(), lr=1e-3)
    if run_dir is not None:  # --- the recipe: line 1 (and the attach calls)
        mon = MonitorSession(run_dir=run_dir)
        mon.attach("actor", actor, actor_opt)
        mon.attach("critic", qf, q_opt)
    obs, _ = env.reset(seed=seed)
    buf = []
    for t in range(steps):
        with torch.no_grad():
            a = actor(torch.as_tensor(obs, dtype=torch.float32)).numpy() * 2.0
        a = np.clip(a + 0.2 * rng.standard_normal(1), -2, 2).astype(np.float32)
        nxt, r, term, trunc, _ = env.step(a)
        buf.append((obs, a / 2.0, r, nxt, float(term)))
        obs = nxt if not (term or trunc) else env.reset()[0]
        if t < 32:
            continue
        if run_dir is not None:
            mon.begin()  # --- line 2: before the update
        idx = rng.integers(0, len(buf), 32)
        o, act, rew, o2, d = (
            torch.as_tensor(np.array(x), dtype=torch.float32) for x in zip(*[buf[i] for i in idx])
        )
        with torch.no_grad():
            target = rew + 0.99 * (1 - d) * qf(torch.cat([o2, actor(o2)], 1)).squeeze(1)
        q_loss = (qf(torch.cat([o, act.reshape(-1, 1)], 1)).squeeze(1) - target).pow(2).mean()
        q_opt.zero_grad()
        q_loss.backward()
        q_opt.step()
        a_loss = -qf(torch.cat([o, actor(o)], 1)).mean()
        actor_opt.zero_grad()
        a_loss.backward()
        actor_opt.step()
        if run_dir is not None:
            mon.note_rewards(rew)
            mon.end(timesteps=t)  # --- line 3: after it (and mon.finish() at the end)
    if run_dir is not None:
        mon.finish()
    return actor, qf


def test_recipe_records_and_does_not_change_training(tmp_path):
    a0, q0 = _ddpg(120)
    a1, q1 = _ddpg(120, run_dir=tmp_path)
    for m0, m1 in ((a0, a1), (q0, q1)):
        for p0, p1 in zip(m0.parameters(), m1.parameters()):
            assert torch.equal(p0, p1)
    df = read_agents(tmp_path / "monitor")
    assert set(df["role"]) == {"actor", "critic"}
    assert (df.groupby("role").size() == 120 - 32).all()
    actor = df[df["role"] == "actor"]
    np.testing.assert_allclose(
        actor[["frac_flowing", "frac_saturated", "frac_dead", "frac_no_path"]].sum(1), 1.0
    )
    assert (actor["lr"] == 0.1).all() and (actor["reward_abs"] > 0).all()
    assert (tmp_path / "monitor" / "summary.json").exists()
