"""Every --mode of every script runs with the cpu preset's schedule flags (refresh, speed, T, ckpt, lr grid,
temperature) at smoke sizes, so that a preset flag that only one mode resolves (e.g. pcfg.py's --refresh auto,
which once crashed --mode oneshot after the teacher had trained) can never crash another mode again; the run of
--mode all also writes every result and figure it promises (pcfg.py and lm_pretrain.py; parity.py's in
tests/test_parity.py)."""
import os

import pytest

import common
import lm_pretrain
import lm_pretrain_extra  # docs/ (pytest.ini puts it on the path)
import parity
import parity_sweep
import pcfg
import pcfg_extra

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")


def flags(preset, keys, scale=None):
    """The cpu preset's values of `keys` as command-line flags; step counts in `scale` shrink to smoke sizes."""
    out = []
    for k in keys:
        if k in preset:
            v = preset[k] if k not in (scale or {}) else max(1, int(preset[k] * scale[k]))
            out += [f"--{k}", str(v)]
    return out


def run_modes(main, base, teacher_out, modes, tmp_path):
    """Every mode; returns what main returned per mode, and the results.json of --mode all."""
    main(base + ["--mode", "teacher", "--out", teacher_out])
    res = {mode: main(base + ["--mode", mode, "--teacher_dir", teacher_out, "--out", str(tmp_path / mode)])
           for mode in modes}
    assert all(r is not None for r in res.values())
    res["all"] = main(base + ["--mode", "all", "--out", str(tmp_path / "all")])
    return res, common.read_json(tmp_path / "all" / "results.json")


@pytest.mark.parametrize("objective", ["mlm", "boundary"])
def test_pcfg_every_mode_with_the_cpu_schedule_flags(tmp_path, objective):
    cpu = pcfg.PRESETS[("cpu", objective)]
    base = ["--preset", "smoke", "--objective", objective, "--seeds", "0", "--level", "3"]
    base += flags(cpu, ["refresh", "speed", "lr_grid", "temperature", "two_shot_sweep"])
    res, saved = run_modes(pcfg.main, base, str(tmp_path / "teacher"),
                           ["probe", "ce", "oneshot", "progressive", "two_shot"], tmp_path)
    assert res["all"]["students"] == saved["students"]
    methods = {"ce", "oneshot", "progressive"} | ({"two_shot"} if objective == "mlm" else set())
    assert set(saved["students"]) == methods
    for entries in saved["students"].values():
        assert {(e["budget"], e["seed"]) for e in entries} == {(20, 0), (40, 0)}
        assert all(0 <= e["acc"] <= 1 for e in entries)
    if objective == "boundary":
        assert set(saved["teacher"]) == {"3"} and (tmp_path / "all" / "fig_boundary_accuracy.png").exists()
        horizon = lambda e: min(40, int(e["budget"] * cpu["speed"]))  # the teacher's 40 steps, speed x budget
        assert all(0 < e["stage1"] <= horizon(e) for e in res["two_shot"]["students"]["two_shot"])
        return
    t, p = saved["teacher"], saved["probe"]
    assert t["steps"][0] == 0 and t["steps"][-1] == 40 and len(t["val_loss"]) == len(t["val_acc"]) == len(t["steps"])
    assert p["steps"] == t["steps"]
    for key in ("m_robust", "m_close"):
        assert set(p[key]) == {"3gram", "5gram", "4gram", "2gram"}
        assert all(len(p[key][w]["l1"]["median"]) == len(p["steps"]) for w in p[key])
    assert len(p["nt"]["acc"]) == len(p["steps"]) and len(p["nt"]["acc"][0]) == 7
    assert set(p["students_nt"]) == set(saved["students"])
    assert saved["two_shot_ckpt"] in t["steps"]  # the sweep: test_pcfg.py, test_refresh_auto_and_the_sweep_...
    pcfg_extra.main([str(tmp_path / "all")])  # docs/: the curriculum and probe figures, drawn from results.json
    for fig in ("fig1_accuracy.png", "fig_curriculum.png", "fig_probes.png"):
        assert (tmp_path / "all" / fig).stat().st_size > 1000


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_parity_every_mode_with_the_cpu_schedule_flags(tmp_path, arch):
    cpu, smoke = parity.PRESETS[("cpu", arch)], parity.PRESETS[("smoke", arch)]
    base = ["--preset", "smoke", "--arch", arch, "--seeds", "0"]
    scale = smoke["steps"] / cpu["steps"]
    base += flags(cpu, ["speed", "lr_grid", "temperature", "T", "extract_steps"], {"T": scale, "extract_steps": scale})
    run_modes(parity.main, base, str(tmp_path / "teacher"), ["probe", "ce", "oneshot", "progressive", "two_shot",
                                                             "extract"], tmp_path)
    parity_sweep.main(base + ["--out", str(tmp_path / "sweep")])  # the width sweep: docs/parity_sweep.py


def test_lm_pretrain_every_mode_with_the_cpu_schedule_flags(tmp_path):
    cpu, smoke = lm_pretrain.PRESETS["cpu"], lm_pretrain.PRESETS["smoke"]
    first = lambda p: int(p["budgets"].split(",")[0])
    base = ["--preset", "smoke", "--data", TEXT, "--cache", str(tmp_path / "cache"), "--seeds", "0"]
    base += flags(cpu, ["refresh", "lr_grid", "T"], {"T": first(smoke) / first(cpu)})
    _, saved = run_modes(lm_pretrain.main, base, str(tmp_path / "teacher"),
                         ["probe", "ce", "oneshot", "progressive", "two_shot"], tmp_path)
    out = tmp_path / "all"
    assert saved["config"]["preset"] == "smoke"
    t = saved["teacher"]
    assert t["steps"] == [0, 4, 8, 12, 16, 20] and len(t["val_loss"]) == len(t["val_acc"]) == 6
    assert t["val_loss"][-1] < t["val_loss"][0]  # the teacher learns something in 20 steps
    source = "pride_and_prejudice_ch01-12"
    assert set(t["acc_by_source"]) == {source} and saved["eval_set"]["sequences"] == 16
    assert saved["eval_set"]["masked_tokens_by_source"][source] > 0
    for m in lm_pretrain.METHODS:
        rows = saved["students"][m]
        assert sorted((r["budget"], r["seed"]) for r in rows) == [(10, 0), (20, 0)]
        assert all(0 <= r["acc"] <= 1 and r["acc_by_source"][source] == pytest.approx(r["acc"]) for r in rows)
        last = {b: max(s for s in t["steps"] if s <= b) for b in (10, 20)}  # the horizon's last checkpoint
        assert all(r["teacher_last"] == (None if m == "ce" else last[r["budget"]]) for r in rows)
    assert [p["step"] for p in saved["probe"]] == t["steps"]
    for p in saved["probe"]:
        for w in lm_pretrain.WINDOWS:
            for kind in ("robust", "close"):
                assert 0 <= p["windows"][w][kind]["l1"]["median"] <= 2
    assert saved["two_shot_ckpt"] == saved["phases"]["inflection"] in t["steps"]
    assert set(saved["checks"]) >= {"three_phases", "mrobust_peak_in_drop", "progressive_beats_ce_by_2pts"}
    assert saved["phases"]["m_robust_peak_step"] in t["steps"]
    lm_pretrain_extra.main([str(out)])  # the probe for every window, redrawn from the run folder
    for f in ("fig5_real_data.png", "probe_windows.png", "tokenizer.json", "metrics.jsonl", "config.json"):
        assert (out / f).exists(), f
    ckpt = common.load_checkpoint(out / "ckpt" / "teacher" / "step_000000020.pt")
    assert set(ckpt) >= {"model", "step", "val_loss", "val_acc"}
