"""The environment replays the published implementation's golden vectors exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ccm_madrl.cli import main
from ccm_madrl.parity import check_file


def test_env_golden_all_quantities_pass(env_golden):
    rep = check_file(env_golden)
    assert rep.kind == "env"
    failed = [c.quantity for c in rep.checks if not c.passed]
    assert not failed, failed
    names = {c.quantity for c in rep.checks}
    for mode in ("H2", "TOBM"):  # both modes are checked, every quantity
        for q in (
            "states",
            "rewards",
            "dones",
            "energy_penalty_frac",
            "time_penalty_frac",
            "construction power",
        ):
            assert f"{mode} {q}" in names


def test_env_states_are_bit_identical(env_golden):
    rep = check_file(env_golden)
    states = [c for c in rep.checks if c.quantity.endswith(" states")]
    assert states and all(c.max_abs == 0.0 for c in states)


def test_parity_cli_exit_codes(env_golden, tmp_path, capsys):
    assert main(["parity", str(env_golden)]) == 0
    # a file of the same format with one reward perturbed by 1e-7 relative must fail
    with np.load(env_golden) as z:
        d = {k: z[k] for k in z.files}
    d["H2_rewards"] = d["H2_rewards"].copy()
    d["H2_rewards"][3] *= 1 + 1e-7
    bad = tmp_path / "tampered.npz"
    np.savez(bad, **d)
    assert main(["parity", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "H2 rewards" in out


def test_parity_on_another_file_of_the_format(env_golden, tmp_path):
    """The checker works on any file of the format, e.g. a single mode and fewer steps."""
    with np.load(env_golden) as z:
        d = {k: z[k] for k in z.files if not k.startswith("TOBM_")}
    for k in ("actions", "rewards", "dones", "energy_penalty_frac", "time_penalty_frac"):
        d[f"H2_{k}"] = d[f"H2_{k}"][:10]
    d["H2_states"] = d["H2_states"][:11]
    f = tmp_path / "h2only.npz"
    np.savez(f, **d)
    rep = check_file(f)
    assert rep.passed and all(c.quantity.startswith("H2") for c in rep.checks)


def test_parity_rejects_unknown_files(tmp_path):
    f = tmp_path / "x.npz"
    np.savez(f, a=np.zeros(3))
    with pytest.raises(ValueError, match="unrecognised golden file"):
        check_file(f)
    assert main(["parity", str(tmp_path / "missing.npz")]) == 2
