"""The environment replays the published implementation's golden vectors exactly."""

from __future__ import annotations

import numpy as np
import pytest

from ccm_madrl.cli import main
from ccm_madrl.parity import REWARD_RTOL, Tolerance, check_file


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


def _tampered(env_golden, tmp_path, rel: float):
    """The env golden file with one H2 reward scaled by 1 + rel."""
    with np.load(env_golden) as z:
        d = {k: z[k] for k in z.files}
    d["H2_rewards"] = d["H2_rewards"].copy()
    d["H2_rewards"][3] *= 1 + rel
    path = tmp_path / f"tampered_{rel:g}.npz"
    np.savez(path, **d)
    return path


def _table(out: str) -> dict[str, list[str]]:
    """The rows of a printed parity table, by quantity (a wide console: one line per row)."""
    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if len(cells) == 7 and cells[0] not in ("quantity", ""):
            rows[cells[0]] = cells
    return rows


def test_rtol_loosens_a_failing_check_to_pass_and_tightening_fails(env_golden, tmp_path, capsys):
    bad = _tampered(env_golden, tmp_path, 1e-7)
    rep = check_file(bad)
    h2 = next(c for c in rep.checks if c.quantity == "H2 rewards")
    assert not h2.passed and h2.tolerance == Tolerance("rtol", REWARD_RTOL, REWARD_RTOL) and h2.margin > 1
    loose = check_file(bad, rtol=1e-6)
    h2 = next(c for c in loose.checks if c.quantity == "H2 rewards")
    assert loose.passed and h2.tolerance.value == 1e-6 and not h2.tolerance.is_default and h2.margin < 1
    # exact checks stay exact, whatever --rtol says
    assert all(c.tolerance is None for c in loose.checks if c.quantity.endswith(("states", "dones")))
    capsys.readouterr()
    assert main(["parity", str(bad)]) == 1
    assert "tolerances: the strict defaults: rtol 1e-09" in capsys.readouterr().out
    assert main(["parity", "--rtol", "1e-6", str(bad)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out
    assert "tolerances: --rtol 1e-06 (not the defaults): rtol 1e-06 (default 1e-09)" in " ".join(out.split())
    # a difference far within the default passes it, and fails a tolerance tightened to absurdity
    slight = _tampered(env_golden, tmp_path, 1e-12)
    assert main(["parity", str(slight)]) == 0
    assert main(["parity", "--rtol", "1e-30", str(slight)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "rtol 1e-30" in out
    assert not check_file(slight, rtol=1e-30).passed


def test_the_table_prints_tolerance_and_margin_error_over_tolerance(
    env_golden, tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "250")
    bad = _tampered(env_golden, tmp_path, 1e-7)
    for rtol, argv in ((None, []), (1e-6, ["--rtol", "1e-6"])):
        rep = check_file(bad, rtol=rtol)
        main(["parity", *argv, str(bad)])
        rows = _table(capsys.readouterr().out)
        assert set(rows) == {c.quantity for c in rep.checks}
        for c in rep.checks:
            cells = rows[c.quantity]
            if c.tolerance is None:
                assert cells[3:5] == ["exact", "-"]
                continue
            assert c.tolerance.kind == "rtol" and c.margin == c.max_rel / c.tolerance.value
            assert cells[3] == f"rtol {c.tolerance.value:g}"
            assert cells[4] == f"{c.max_rel / c.tolerance.value:.2g}x"
            assert float(cells[4][:-1]) == pytest.approx(float(cells[2]) / c.tolerance.value, rel=0.06)
            assert (cells[5] == "PASS") == (c.margin <= 1)
    assert rows["H2 rewards"][4] == "0.1x"  # 1e-7 against 1e-6


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf", ""])
@pytest.mark.parametrize("flag", ["--rtol", "--atol"])
def test_a_bad_tolerance_exits_2_with_one_line_naming_the_flag(env_golden, capsys, flag, value):
    assert main(["parity", f"{flag}={value}", str(env_golden)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    lines = cap.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"ccm-madrl parity: error: {flag}"), lines
    with pytest.raises(ValueError, match="rtol"):
        check_file(env_golden, rtol=float(value) if value in ("0", "-1", "nan", "inf") else value)
