"""The nested agent config: old flat keys keep loading (one table, FLAT_KEYS), run ids stay what they
were before the sub-configs (tests/data/run_ids.json, recorded at f5e6007), old run directories
resume, allowed values come from the registries, and docs/config.md is generated from the code."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ccm_madrl.agents import parts
from ccm_madrl.agents.config import FLAT_KEYS, SECTIONS, AgentConfig, canonical_key, part_registry
from ccm_madrl.cli import main
from ccm_madrl.experiment import ConfigError, Trainer, build_config
from ccm_madrl.experiment.config import load_config, load_yaml
from ccm_madrl.sweep import expand, load_sweep

ROOT = Path(__file__).resolve().parents[1]
RECORDED = json.loads((ROOT / "tests" / "data" / "run_ids.json").read_text())
SMALL = {
    "env": {"n_agents": 6, "max_steps": 3},
    "agent": {"replay": {"batch_size": 8}, "architecture": {"critic_hidden": [32, 16]}},
    "training": {"episodes": 6, "eval_episodes": 2, "checkpoint_every": 2, "tensorboard": False},
    "monitor": {"enabled": False},
}


def _recorder():
    spec = importlib.util.spec_from_file_location("record_run_ids", ROOT / "scripts" / "record_run_ids.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_ids_of_every_config_under_configs_are_unchanged(monkeypatch):
    monkeypatch.chdir(ROOT)
    for path, rid in RECORDED["configs"].items():
        assert load_config(path).id() == rid, path
    for label, rec in RECORDED["sweeps"].items():
        path, _, setting = label.partition(" --set ")
        spec, base = load_sweep(path, set_=[setting] if setting else [])
        ids = [r.id for r in expand(spec, base, path)]
        assert (len(ids), ids[0]) == (rec["runs"], rec["first"]), label
        assert hashlib.sha256("\n".join(ids).encode()).hexdigest() == rec["sha256"], label
        if "ids" in rec:
            assert ids == rec["ids"], label
    assert len(RECORDED["sweeps"]) >= 20  # every sweep file, with and without the preset


@pytest.mark.parametrize("preset", [[], ["--set", "published_code=44fba1b"]], ids=["spec", "44fba1b"])
def test_the_paper_sweep_dry_run_lists_the_recorded_ids(preset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    label = "configs/paper/table1_s10.yaml" + (" --set published_code=44fba1b" if preset else "")
    assert (
        main(["sweep", "configs/paper/table1_s10.yaml", "--dry-run", "--out", str(tmp_path / "s"), *preset])
        == 0
    )
    lines = capsys.readouterr().out.splitlines()
    ids = [ln.split()[0] for ln in lines[:-1]]
    assert ids == RECORDED["sweeps"][label]["ids"]
    assert lines[-1] == f"{len(ids)} runs: {len(ids)} pending"  # the count per state
    assert ids[0] == ("f836813693b7" if preset else "a9280fd94c03")


@pytest.mark.parametrize("name", sorted(RECORDED["every_option"]))
def test_an_old_resolved_config_loads_to_the_same_run(name):
    """The config.yaml an old run wrote (every agent option flat, here away from its default) loads,
    gives the recorded id and the same options as the flat keys given one by one."""
    rec = RECORDED["every_option"][name]
    old = build_config(rec["resolved"])
    assert old.id() == rec["id"]
    assert old == build_config({"agent": _recorder().EVERY_OPTION[name]})
    assert old.agent.id_fields() == rec["resolved"]["agent"]
    assert build_config(yaml.safe_load(old.to_yaml())).id() == rec["id"]  # the nested file it writes now


def test_every_old_key_and_its_new_key_give_the_same_config():
    values = {**_recorder().EVERY_OPTION["ccm_entropy"], "activation": "softsign"}
    for old, new in FLAT_KEYS.items():
        v = json.dumps(values.get(old, "maddpg" if old == "algorithm" else "local"))
        extra = ["agent.mitigations.actor_reg_coef=0.1"] if old == "actor_reg" else []
        a = build_config({}, [f"agent.{old}={v}", *extra])
        b = build_config({}, [f"agent.{new}={v}", *extra])
        assert a == b and a.id() == b.id(), old
        assert a != build_config({}, extra), old  # the value took effect
        assert canonical_key(f"agent.{old}") == f"agent.{new}"
    assert canonical_key("env.max_steps") == "env.max_steps"


def test_an_old_and_a_new_key_that_disagree_is_one_error_naming_both():
    with pytest.raises(ConfigError, match=r"agent\.replay_capacity .*agent\.replay\.capacity"):
        build_config({}, ["agent.replay_capacity=5", "agent.replay.capacity=6"])
    assert build_config({}, ["agent.replay_capacity=5", "agent.replay.capacity=5"]).agent.replay.capacity == 5


def test_the_preset_conflicts_under_either_name():
    for key in ("agent.actor_joint_states", "agent.variant.actor_joint_states"):
        with pytest.raises(ConfigError, match=r"agent\.variant\.actor_joint_states: published_code 44fba1b"):
            build_config({"published_code": "44fba1b"}, [f"{key}=current"])


def test_an_old_run_directory_resumes_bit_identically(tmp_path, monkeypatch):
    """A run directory written before the sub-configs (a flat config.yaml, its checkpoint) resumes to
    the run an uninterrupted new one gives."""
    cfg = build_config(SMALL)
    Trainer(cfg, tmp_path / "full", progress=False).run()
    original = Trainer.episode

    def dying(self, ep):
        if ep == 3:
            raise SystemExit("killed")
        return original(self, ep)

    monkeypatch.setattr(Trainer, "episode", dying)
    with pytest.raises(SystemExit):
        Trainer(cfg, tmp_path / "old", progress=False).run()
    monkeypatch.setattr(Trainer, "episode", original)
    flat = {**cfg.model_dump(mode="json"), "agent": cfg.agent.id_fields()}  # the layout 0.1 wrote
    (tmp_path / "old" / "config.yaml").write_text(yaml.safe_dump(flat, sort_keys=False))
    old_cfg = build_config(load_yaml(tmp_path / "old" / "config.yaml"))
    assert old_cfg.id() == cfg.id()
    Trainer(old_cfg, tmp_path / "old", progress=False).run()
    a, b = (pd.read_parquet(tmp_path / d / "metrics.parquet") for d in ("full", "old"))
    keep = [c for c in a.columns if not c.startswith("time_")]
    pd.testing.assert_frame_equal(a[keep], b[keep])
    assert "replay:" in (tmp_path / "old" / "config.yaml").read_text()  # rewritten nested


def test_the_store_reads_old_and_new_run_directories_into_one_set_of_columns(tmp_path):
    from ccm_madrl.store import load

    for seed, d in enumerate(("new", "old")):
        cfg = build_config(SMALL, ["training.episodes=2", f"seed={seed}"])
        agent = cfg.agent.model_dump(mode="json") if d == "new" else cfg.agent.id_fields()
        (tmp_path / d).mkdir()
        (tmp_path / d / "config.yaml").write_text(
            yaml.safe_dump({**cfg.model_dump(mode="json"), "agent": agent})
        )
    runs = load([tmp_path / "new", tmp_path / "old"]).runs
    assert runs["cfg.agent.replay.batch_size"].tolist() == [8, 8]
    assert not [c for c in runs.columns if c.startswith("cfg.agent.") and c[len("cfg.agent.") :] in FLAT_KEYS
                and FLAT_KEYS[c[len("cfg.agent.") :]] != c[len("cfg.agent.") :]]  # fmt: skip


def test_every_option_naming_a_part_allows_exactly_its_registry():
    named = {}
    for section, model in SECTIONS.items():
        for name, field in model.model_fields.items():
            if (part := part_registry(field)) is not None:
                named[f"{section}.{name}".lstrip(".")] = part.registry
                allowed = list(getattr(parts, part.registry))
                with pytest.raises(ConfigError, match="must be one of '" + "'.*'".join(allowed) + "'"):
                    build_config({}, [f"agent.{section}.{name}=no_such_part".replace("..", ".")])
    assert named == {
        "optimizer": "OPTIMIZERS",
        "rejected": "REJECTED",
        "architecture.activation": "ACTIVATIONS",
        "architecture.critic_output": "CRITIC_OUTPUTS",
        "mitigations.reward_norm": "REWARD_SIGNALS",
        "mitigations.actor_reg": "ACTOR_REGULARISERS",
        "variant.actor_sharing": "ACTOR_SHARING",
        "variant.actor_update": "UPDATE_SCHEDULES",
        "variant.actor_objective": "ACTOR_CANDIDATES",
        "variant.actor_joint_states": "JOINT_STATES",
    }


def test_a_part_registered_here_is_a_valid_config_value(monkeypatch):
    """No Literal to extend: registering a regulariser (or an activation, a schedule, ...) is all."""
    setting = ["agent.mitigations.actor_reg=l2_actions", "agent.mitigations.actor_reg_coef=0.1"]
    with pytest.raises(ConfigError, match="agent.mitigations.actor_reg: must be one of"):
        build_config(SMALL, setting)

    def l2_actions(actors, states, coef, gen):
        u = actors(states)
        return u, coef * (u**2).mean()

    monkeypatch.setitem(parts.ACTOR_REGULARISERS, "l2_actions", l2_actions)
    monkeypatch.setitem(parts.ACTIVATIONS, "clamp", lambda: __import__("torch").nn.Hardtanh(-0.5, 0.5))
    cfg = build_config(SMALL, [*setting, "agent.architecture.activation=clamp"])
    assert (cfg.agent.mitigations.actor_reg, cfg.agent.architecture.activation) == ("l2_actions", "clamp")
    assert (
        AgentConfig(mitigations={"actor_reg": "l2_actions", "actor_reg_coef": 0.1}).mitigations.actor_reg
        == "l2_actions"
    )


def test_docs_config_md_is_generated_from_the_code():
    spec = importlib.util.spec_from_file_location("render", ROOT / "scripts" / "render_config_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    text = (ROOT / "docs" / "config.md").read_text()
    assert mod.render(text) == text, "docs/config.md is stale: run scripts/render_config_docs.py"
    for old, new in FLAT_KEYS.items():
        assert old == new or f"| `agent.{old}` | `agent.{new}` |" in text


def test_a_learner_registered_here_is_a_valid_algorithm(monkeypatch):
    from ccm_madrl import agents

    with pytest.raises(ConfigError, match="agent.algorithm: .*unknown algorithm 'fixed_local'"):
        build_config({}, ["agent.algorithm=fixed_local"])
    monkeypatch.setitem(
        agents.LEARNERS, "fixed_local", lambda cfg, rng, device: agents.FixedPolicy(cfg.env, "all_local", rng)
    )
    cfg = build_config(SMALL, ["agent.algorithm=fixed_local"])
    assert isinstance(agents.make_learner(cfg, None), agents.FixedPolicy)
