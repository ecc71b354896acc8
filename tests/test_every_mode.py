"""Every --mode of every script runs with the cpu preset's schedule flags (refresh, speed, T, ckpt, lr grid,
temperature) at smoke sizes, so that a preset flag that only one mode resolves (e.g. pcfg.py's --refresh auto,
which once crashed --mode oneshot after the teacher had trained) can never crash another mode again; the run of
--mode all also writes every result and figure it promises (pcfg.py and lm_pretrain.py; parity.py's in
tests/test_parity.py)."""
import json
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
    """Every mode; returns what main returned per mode ("teacher" included), and the results.json of --mode all."""
    res = {"teacher": main(base + ["--mode", "teacher", "--out", teacher_out])}
    for mode in modes:
        res[mode] = main(base + ["--mode", mode, "--teacher_dir", teacher_out, "--out", str(tmp_path / mode)])
        assert json.loads(json.dumps(res[mode])) == common.read_json(tmp_path / mode / "results.json"), mode
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
    lrs = [f"{float(lr):g}" for lr in cpu["lr_grid"].split(",")]
    records = [r for r in common.read_jsonl(tmp_path / "all" / "metrics.jsonl") if r["role"] == "student"]
    for m, entries in saved["students"].items():
        assert [(e["budget"], e["seed"]) for e in entries] == [(20, 0), (40, 0)]
        for e in entries:  # the accuracy at the budget of its group's record, at the lr of the best one
            group = f"b{e['budget']}-s0" + ("-L3" if objective == "boundary" else "")
            steps = [r["step"] for r in records if r["group"] == group]
            curve = {lr: [r["acc"][f"{m}/lr={lr}"] for r in records if r["group"] == group] for lr in lrs}
            assert steps == list(range(0, e["budget"] + 1, 10)) and f"{e['lr']:g}" in lrs
            assert e["acc"] == curve[f"{e['lr']:g}"][-1] == max(c[-1] for c in curve.values()), (m, e)
            if objective == "mlm":  # every lr's accuracy, and the best lr's curve
                assert saved["by_lr"][m][str(e["budget"])] == {lr: c[-1] for lr, c in curve.items()}
                assert saved["curves"][m][str(e["budget"])] == {"steps": steps, "acc": [curve[f"{e['lr']:g}"]]}
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


def first_reaching(steps, curve, threshold):
    return next((s for s, a in zip(steps, curve) if a >= threshold), None)


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_parity_every_mode_with_the_cpu_schedule_flags(tmp_path, monkeypatch, arch):
    """Each mode's results: its method alone, every lr of the grid, seed 0, the numbers of its metrics.jsonl
    records (final accuracy, steps to 90%, the best lr's curve), and the teacher checkpoints it loaded."""
    cpu, smoke = parity.PRESETS[("cpu", arch)], parity.PRESETS[("smoke", arch)]
    base = ["--preset", "smoke", "--arch", arch, "--seeds", "0"]
    scale = smoke["steps"] / cpu["steps"]
    base += flags(cpu, ["speed", "lr_grid", "temperature", "T", "extract_steps"],
                  {"T": scale, "extract_steps": scale})
    loaded, real, used = [], parity.load_teacher, {}
    monkeypatch.setattr(parity, "load_teacher", lambda run, step, dev: loaded.append(step) or real(run, step, dev))

    def main(argv):  # parity.main, noting the teacher checkpoints that each mode loaded, in order
        loaded.clear()
        out = parity.main(argv)
        used[argv[argv.index("--mode") + 1]] = list(loaded)
        return out
    modes = ["probe", "ce", "oneshot", "progressive", "two_shot", "extract"]
    res, _ = run_modes(main, base, str(tmp_path / "teacher"), modes, tmp_path)
    saved = list(range(0, smoke["teacher_steps"] + 1, smoke["ckpt_every"]))
    final = saved[-1]
    teacher = res["teacher"]["teacher"]
    records = common.read_jsonl(tmp_path / "teacher" / "metrics.jsonl")
    assert teacher["steps"] == saved and teacher["acc"] == [r["acc"] for r in records]  # ckpt_every = eval_every
    assert teacher["final_acc"] == teacher["acc"][-1] and 0.4 < teacher["acc"][0] < 0.6  # at init: chance
    assert arch == "transformer" or teacher["final_acc"] >= 0.99  # the smoke MLP teacher learns parity
    assert teacher["steps_to"]["0.9"] == first_reaching(saved, teacher["acc"], 0.9)
    assert used["teacher"] == [] and used["probe"] == saved and res["probe"]["probe"]["steps"] == saved
    assert res["probe"]["probe"]["auto_ckpt"] in saved and "students" not in res["probe"]
    lrs = {f"{float(lr):g}" for lr in cpu["lr_grid"].split(",")}
    steps = list(range(0, smoke["steps"] + 1, smoke["eval_every"]))
    for mode in ("ce", "oneshot", "progressive", "two_shot", "extract"):
        r = res[mode]["students"]
        assert list(r) == [mode] and set(r[mode]["by_lr"]) == lrs and res[mode]["student_steps"] == steps
        records = [x for x in common.read_jsonl(tmp_path / mode / "metrics.jsonl") if x["role"] == "student"]
        assert [x["step"] for x in records] == steps
        curves = {lr: [x["acc"][f"{mode}/lr={lr}/seed=0"] for x in records] for lr in lrs}
        for lr, row in r[mode]["by_lr"].items():
            assert row["seeds"] == [0] and row["final_acc"] == [curves[lr][-1]], (mode, lr)
            assert row["steps_to"]["0.9"] == [first_reaching(steps, curves[lr], 0.9)], (mode, lr)
        best = f"{r[mode]['lr']:g}"
        assert r[mode]["acc"] == [curves[best]] and r[mode]["final_acc"] == r[mode]["by_lr"][best]["final_acc"]
        budget = lambda row: smoke["steps"] if row["steps_to"]["0.9"][0] is None else row["steps_to"]["0.9"][0]
        assert all(budget(r[mode]) <= budget(row) for row in r[mode]["by_lr"].values())  # reported at its best lr
    assert used["ce"] == [] and set(used["oneshot"]) == {final} and set(used["extract"]) == {final}
    stage1 = res["two_shot"]["two_shot_ckpt"]
    assert stage1 == res["two_shot"]["probe"]["auto_ckpt"] and used["two_shot"] == saved + [stage1, final]
    progressive = used["progressive"]  # checkpoints in order, as the student's steps go on
    assert progressive == sorted(progressive) and set(progressive) <= set(saved)
    if arch == "mlp":  # speed 1: the student follows the teacher's whole run
        assert len(set(progressive)) >= 3 and progressive[-1] == final
    else:  # speed 0.125: 60 student steps follow the teacher's first 8 steps, never its final checkpoint
        assert max(progressive) < final
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
    records = [r for r in common.read_jsonl(out / "metrics.jsonl") if r["role"] == "student"]
    stage1, T = saved["two_shot_ckpt"], int(base[base.index("--T") + 1])
    for m in lm_pretrain.METHODS:
        rows = saved["students"][m]
        assert sorted((r["budget"], r["seed"]) for r in rows) == [(10, 0), (20, 0)]
        last = {b: max(s for s in t["steps"] if s <= b) for b in (10, 20)}  # the horizon's last checkpoint
        for r in rows:  # the record of the run that evaluated this budget (CE's budgets share one run)
            b = r["budget"]
            at = [x for x in records if x["run"].startswith(f"{m}-lr{r['lr']:g}-seed0-")
                  and x["step"] == b and "val_acc" in x]
            assert len(at) == 1 and (r["acc"], r["loss"]) == (at[0]["val_acc"], at[0]["val_loss"]), m
            assert r["acc_by_source"] == {source: pytest.approx(r["acc"])}
            run = {x["step"]: x["teacher_ckpt"] for x in records if x["run"] == at[0]["run"]}
            used = [run[s] for s in sorted(run) if s <= b]  # the checkpoint of the step before each
            if m == "two_shot":  # Alg. 1: the stage-1 checkpoint (clamped into the horizon) for T steps
                first = max(s for s in t["steps"] if s <= min(stage1, last[b]))
                assert used == [first if s <= T else last[b] for s in sorted(run) if s <= b], used
            if m in ("oneshot", "progressive"):  # progressive: in order, ending at the horizon
                assert used == sorted(used) and (m == "progressive" or set(used) == {last[b]}), used
            assert r["teacher_last"] == used[-1] == (None if m == "ce" else last[b])
            assert m != "ce" or not any(used)
    assert [p["step"] for p in saved["probe"]] == t["steps"]
    for p in saved["probe"]:  # 4 probe sequences x 3 positions (stride 8 in 32 tokens, away from the ends)
        for w in lm_pretrain.WINDOWS:
            for kind in ("robust", "close"):
                l1, tv = p["windows"][w][kind]["l1"], p["windows"][w][kind]["tv"]
                assert p["windows"][w]["count"] == 12 and l1["q25"] <= l1["median"] <= l1["q75"]
                assert tv == {k: pytest.approx(v / 2) for k, v in l1.items()}  # total variation = L1 / 2
    robust = {p["step"]: p["windows"]["3-gram"]["robust"]["l1"]["median"] for p in saved["probe"]}
    assert saved["phases"]["m_robust_peak_step"] == max(t["steps"][1:], key=robust.get)  # a trained one
    assert saved["two_shot_ckpt"] == saved["phases"]["inflection"] in t["steps"]
    assert set(saved["checks"]) >= {"three_phases", "mrobust_peak_in_drop", "progressive_beats_ce_by_2pts"}
    lm_pretrain_extra.main([str(out)])  # the probe for every window, redrawn from the run folder
    for f in ("fig5_real_data.png", "probe_windows.png", "tokenizer.json", "metrics.jsonl", "config.json"):
        assert (out / f).exists(), f
    ckpt = common.load_checkpoint(out / "ckpt" / "teacher" / "step_000000020.pt")
    assert set(ckpt) >= {"model", "step", "val_loss", "val_acc"}
