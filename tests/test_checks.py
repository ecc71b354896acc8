"""Every key of `checks` in results.json can fail: for each script, a hand-made good run passes every check,
and for each check a plausible bad run (one change to the good one) makes exactly that check false. A check
added without a bad run here fails the coverage assertion."""
import copy
from types import SimpleNamespace

import common
import lm_pretrain
import parity
import pcfg


def checks_of(module, results, args):
    return common.split_checks(module.claim_checks(results, args))[0]


def assert_each_check_can_fail(module, good, args, bad_runs):
    passed = checks_of(module, good, args)
    assert passed and all(passed.values()), passed
    assert set(bad_runs) == set(passed), "each check needs a bad run below"
    for key, spoil in bad_runs.items():
        bad = copy.deepcopy(good)
        spoil(bad)
        assert checks_of(module, bad, args)[key] is False, key


# ---------------------------------------------------------------------------------------------------- pcfg.py

def pcfg_run():
    steps = list(range(0, 110, 10))
    st = {m: [{"budget": b, "seed": s, "acc": a + 0.001 * s} for b, a in zip((20, 40), accs) for s in (0, 1)]
          for m, accs in {"ce": (0.60, 0.70), "oneshot": (0.61, 0.71), "progressive": (0.70, 0.75),
                          "two_shot": (0.68, 0.74)}.items()}
    median = [0.01, 0.02, 0.03, 0.05, 0.20, 0.30, 0.10, 0.05, 0.02, 0.01, 0.005]
    return {"students": st,
            "teacher": {"steps": steps, "val_loss": [2.0, 1.0, 0.98, 0.96, 0.7, 0.4, 0.3, 0.28, 0.27, 0.26, 0.25]},
            "phases": {"drop_start": 30, "drop_end": 60, "inflection": 50,
                       "slopes": {"plateau": -0.002, "drop": -0.02, "decay": -0.001}},
            "probe": {"steps": steps, "m_robust": {"3gram": {"l1": {"median": median}}}}}


def _move_mrobust_peak_after_the_drop(r):
    med = r["probe"]["m_robust"]["3gram"]["l1"]
    med["median"] = [0.01, 0.02, 0.03, 0.05, 0.06, 0.07, 0.08, 0.30, 0.05, 0.02, 0.01]


def test_pcfg_each_check_can_fail():
    args = SimpleNamespace(budget_list=[20, 40])

    def set_acc(r, method, budget, acc):
        for e in r["students"][method]:
            if e["budget"] == budget:
                e["acc"] = acc

    def final_median(r, value):
        r["probe"]["m_robust"]["3gram"]["l1"]["median"][-1] = value

    bad_runs = {
        "progressive_beats_ce_by_2pts": lambda r: set_acc(r, "progressive", 20, 0.61),
        "progressive_ge_ce_every_budget": lambda r: set_acc(r, "progressive", 40, 0.69),
        "progressive_ge_oneshot_every_budget": lambda r: set_acc(r, "oneshot", 40, 0.76),
        "two_shot_beats_oneshot": lambda r: set_acc(r, "two_shot", 20, 0.60),
        # the teacher's run ends inside its drop: no third phase (the old check passed this)
        "three_phases": lambda r: r["phases"].update(drop_end=100),
        "mrobust_peak_in_drop": _move_mrobust_peak_after_the_drop,
        "mrobust_falls_10x": lambda r: final_median(r, 0.05),
    }
    assert_each_check_can_fail(pcfg, pcfg_run(), args, bad_runs)


def test_pcfg_three_phases_fails_without_a_decay_phase_or_with_a_rising_tail():
    args = SimpleNamespace(budget_list=[20, 40])
    for change in ({"drop_end": 100}, {"drop_end": 90},
                   {"slopes": {"plateau": -0.002, "drop": -0.02, "decay": 0.0001}}):
        run = pcfg_run()
        run["phases"].update(change)
        assert checks_of(pcfg, run, args)["three_phases"] is False, change


# ---------------------------------------------------------------------------------------------------- parity.py

def parity_run():
    steps = [0, 100, 200, 300]
    degree = lambda ins, off: {"in_support": {"0": ins, "1": ins}, "off_mean": off, "off_std": [0.0] * 4}
    return {"students": {"ce": {"steps_to": {"0.9": [None, 9000]}}, "oneshot": {"steps_to": {"0.9": [None, None]}},
                         "progressive": {"steps_to": {"0.9": [2000, 3000]}},
                         "two_shot": {"steps_to": {"0.9": [1000, 4000]}}},
            "two_shot_ckpt": 200,
            "probe": {"steps": steps, "auto_ckpt": 200,
                      "degrees": {"1": degree([0.01, 0.05, 0.30, 0.01], [0.01] * 4),
                                  "2": degree([0.01, 0.02, 0.10, 0.01], [0.01] * 4)}}}


def test_parity_each_check_can_fail():
    args = SimpleNamespace(steps=10_000)

    def fading_too_little(r):  # the final teacher keeps the low-degree signal
        for d in r["probe"]["degrees"].values():
            for v in d["in_support"].values():
                v[3] = 0.2

    bad_runs = {
        "half_the_steps_every_seed": lambda r: r["students"]["ce"]["steps_to"]["0.9"].__setitem__(1, 5000),
        "chosen_ckpt_3x": lambda r: [d.update(off_mean=[0.2] * 4) for d in r["probe"]["degrees"].values()],
        "final_ckpt_3x_below_chosen": fading_too_little,
    }
    assert_each_check_can_fail(parity, parity_run(), args, bad_runs)


# ---------------------------------------------------------------------------------------------------- lm_pretrain.py

def lm_run():
    accs = {"ce": 0.30, "oneshot": 0.32, "progressive": 0.35, "two_shot": 0.33}
    median = {0: 0.0, 250: 0.01, 500: 0.02, 1000: 0.1, 1500: 0.3, 2000: 0.2, 3000: 0.08, 4000: 0.05}
    students = {m: [{"budget": 500, "seed": s, "acc": a + 0.001 * s} for s in (0, 1)] for m, a in accs.items()}
    return {"students": students,
            "phases": {"inflection": 1500, "drop_start": 1000, "drop_end": 2000, "m_robust_peak_step": 1500,
                       "falls": {"plateau": 0.1, "drop": 1.5, "decay": 0.3}},
            "probe": [{"step": s, "windows": {"3-gram": {"robust": {"l1": {"median": v}}}}} for s, v in median.items()]}


def test_lm_pretrain_each_check_can_fail():
    args = SimpleNamespace(budget_list=[500, 1000])

    def set_acc(method, *accs):  # one per seed
        return lambda r: [e.update(acc=a) for e, a in zip(r["students"][method], accs)]

    bad_runs = {
        "three_phases": lambda r: r["phases"]["falls"].update(plateau=1.0),  # no plateau: a steady fall
        "mrobust_peak_in_drop": lambda r: r["phases"].update(m_robust_peak_step=250),
        "mrobust_falls_3x": lambda r: r["probe"][-1]["windows"]["3-gram"]["robust"]["l1"].update(median=0.2),
        "progressive_beats_ce_by_2pts": set_acc("progressive", 0.31, 0.31),
        "progressive_beats_ce_every_seed": set_acc("progressive", 0.29, 0.45),
        "progressive_beats_oneshot_by_1pt": set_acc("oneshot", 0.345, 0.345),
    }
    assert_each_check_can_fail(lm_pretrain, lm_run(), args, bad_runs)
