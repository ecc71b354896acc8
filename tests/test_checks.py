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


def assert_only_false(module, good, args, key, spoil):
    """`spoil` (one change to the good run) makes check `key` false and every other check true."""
    bad = copy.deepcopy(good)
    spoil(bad)
    checks = checks_of(module, bad, args)
    assert checks[key] is False, key
    # exactly that check false: a run that breaks two would not show that the second can fail alone
    assert all(checks[k] for k in checks if k != key), (key, checks)


def assert_each_check_can_fail(module, good, args, bad_runs):
    passed = checks_of(module, good, args)
    assert passed and all(passed.values()), passed
    assert set(bad_runs) == set(passed), "each check needs a bad run below"
    for key, spoil in bad_runs.items():
        assert_only_false(module, good, args, key, spoil)


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
        # 1.45 points above CE, still above one-shot (0.61, below one-shot, broke a second check)
        "progressive_beats_ce_by_2pts": lambda r: set_acc(r, "progressive", 20, 0.615),
        # CE above progressive at 40, below one-shot (lowering progressive broke a second check)
        "progressive_ge_ce_every_budget": lambda r: set_acc(r, "ce", 40, 0.76),
        "progressive_ge_oneshot_every_budget": lambda r: set_acc(r, "oneshot", 40, 0.76),
        "two_shot_beats_oneshot": lambda r: set_acc(r, "two_shot", 20, 0.60),
        # the teacher's run ends inside its drop: no third phase (the old check passed this)
        "three_phases": lambda r: r["phases"].update(drop_end=100),
        "mrobust_peak_in_drop": _move_mrobust_peak_after_the_drop,
        "mrobust_falls_10x": lambda r: final_median(r, 0.05),
    }
    assert_each_check_can_fail(pcfg, pcfg_run(), args, bad_runs)


def set_mrobust(r, median, window="3gram"):
    r["probe"]["m_robust"][window] = {"l1": {"median": median}}


def test_pcfg_mrobust_checks_read_the_3gram_by_name():
    """--windows may list another window first: the checks read the 3-gram (Sec. 4.2, Fig. 4)."""
    args = SimpleNamespace(budget_list=[20, 40])
    good = pcfg_run()["probe"]["m_robust"]["3gram"]["l1"]["median"]

    def peak_after_the_drop_behind_a_2gram(r):  # a 2-gram listed first peaks in the drop
        _move_mrobust_peak_after_the_drop(r)
        r["probe"]["m_robust"] = {"2gram": {"l1": {"median": good}}, **r["probe"]["m_robust"]}

    spoil = peak_after_the_drop_behind_a_2gram
    assert_only_false(pcfg, pcfg_run(), args, "mrobust_peak_in_drop", spoil)
    # the 3-gram not probed: the M_robust claim is not shown (false), the other checks stand
    run = pcfg_run()
    run["probe"]["m_robust"] = {"5gram": {"l1": {"median": good}}}
    checks = checks_of(pcfg, run, args)
    assert checks["mrobust_peak_in_drop"] is False and checks["mrobust_falls_10x"] is False, checks
    assert all(v for k, v in checks.items() if not k.startswith("mrobust")), checks


def test_pcfg_mrobust_falls_10x_needs_a_trained_peak_of_context_use():
    args = SimpleNamespace(budget_list=[20, 40])
    # the untrained step 0 holds the maximum; the trained peak (in the drop) falls 6x only
    step0 = [0.50, 0.02, 0.03, 0.05, 0.20, 0.30, 0.10, 0.05, 0.05, 0.05, 0.05]
    assert_only_false(pcfg, pcfg_run(), args, "mrobust_falls_10x", lambda r: set_mrobust(r, step0))
    # a teacher that never uses context: noise at 1e-6 to 2e-5 "peaks" in the drop and "falls" 20x
    flat = [1e-6, 2e-6, 3e-6, 5e-6, 2e-5, 1.5e-5, 1e-5, 5e-6, 2e-6, 1e-6, 1e-6]
    assert_only_false(pcfg, pcfg_run(), args, "mrobust_falls_10x", lambda r: set_mrobust(r, flat))


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


def choose(r, step, in_support):
    """--ckpt auto picks `step`, where every in-support correlation is `in_support`."""
    i = r["probe"]["steps"].index(step)
    r["two_shot_ckpt"] = r["probe"]["auto_ckpt"] = step
    for d in r["probe"]["degrees"].values():
        for v in d["in_support"].values():
            v[i] = in_support


def test_parity_chosen_ckpt_3x_needs_a_checkpoint_inside_the_teachers_run():
    """The curriculum checkpoint is one of the teacher's training (Sec. 3.2, Fig. 3 middle): not the
    untrained step 0 (its random correlations may stand 30x above the off-support's), not the
    final one."""
    args = SimpleNamespace(steps=10_000)
    untrained = lambda r: choose(r, 0, 0.30)
    assert_only_false(parity, parity_run(), args, "chosen_ckpt_3x", untrained)
    run = parity_run()
    choose(run, 300, 0.30)  # the final checkpoint (then final_ckpt_3x_below_chosen is false too)
    assert checks_of(parity, run, args)["chosen_ckpt_3x"] is False


# ---------------------------------------------------------------------------------------------------- lm_pretrain.py

def lm_run():
    accs = {"ce": 0.30, "oneshot": 0.32, "progressive": 0.35, "two_shot": 0.33}
    median = {0: 0.0, 250: 0.01, 500: 0.02, 1000: 0.1, 1500: 0.3, 2000: 0.2, 3000: 0.08, 4000: 0.05}
    students = {m: [{"budget": 500, "seed": s, "acc": a + 0.001 * s} for s in (0, 1)] for m, a in accs.items()}
    # pcfg.py's three_phases on the same numbers: mean loss change per step in each phase
    return {"students": students, "teacher": {"steps": list(median)},
            "phases": {"inflection": 1500, "drop_start": 1000, "drop_end": 2000, "m_robust_peak_step": 1500,
                       "slopes": {"plateau": -1e-4, "drop": -1.5e-3, "decay": -3e-4}},
            "probe": [{"step": s, "windows": {"3-gram": {"robust": {"l1": {"median": v}}}}} for s, v in median.items()]}


def test_lm_pretrain_each_check_can_fail():
    args = SimpleNamespace(budget_list=[500, 1000])

    def set_acc(method, *accs):  # one per seed
        return lambda r: [e.update(acc=a) for e, a in zip(r["students"][method], accs)]

    bad_runs = {
        "three_phases": lambda r: r["phases"]["slopes"].update(plateau=-1e-3),  # no plateau: a steady fall
        # the maximum before the drop, then down 10x
        "mrobust_peak_in_drop": lambda r: set_lm_mrobust(r, {250: 0.5}),
        "mrobust_falls_3x": lambda r: r["probe"][-1]["windows"]["3-gram"]["robust"]["l1"].update(median=0.2),
        # 1.05 points above CE or one-shot (lowering progressive would break two checks)
        "progressive_beats_ce_by_2pts": set_acc("ce", 0.34, 0.34),
        "progressive_beats_ce_every_seed": set_acc("ce", 0.36, 0.28),  # 3 points ahead on the mean
        "progressive_beats_oneshot_by_2pts": set_acc("oneshot", 0.34, 0.34),
        "progressive_beats_oneshot_every_seed": set_acc("oneshot", 0.36, 0.28),
    }
    assert_each_check_can_fail(lm_pretrain, lm_run(), args, bad_runs)


def test_lm_pretrain_three_phases_needs_a_flat_plateau():
    """A loss that rises before its drop has no plateau (the check reads the slope's size)."""
    args = SimpleNamespace(budget_list=[500, 1000])
    spoil = lambda r: r["phases"]["slopes"].update(plateau=1e-3)
    assert_only_false(lm_pretrain, lm_run(), args, "three_phases", spoil)


def set_lm_mrobust(r, medians):
    """The median 3-gram M_robust at the given steps, and m_robust_peak_step as main() stored it on
    ca204b3 (the maximum over every checkpoint, step 0 included)."""
    at = {p["step"]: p["windows"]["3-gram"]["robust"]["l1"] for p in r["probe"]}
    for step, median in medians.items():
        at[step]["median"] = median
    r["phases"]["m_robust_peak_step"] = max(at, key=lambda s: at[s]["median"])


def test_lm_pretrain_mrobust_checks_read_trained_checkpoints():
    """Step 0 is the untrained teacher: its M_robust is no peak of Sec. 5's n-gram curriculum."""
    args = SimpleNamespace(budget_list=[500, 1000])

    def maximum_at_step_0_drop_from_the_first_checkpoint(r):  # the trained peak (1500) is after it
        r["phases"].update(drop_start=250, drop_end=500)
        set_lm_mrobust(r, {0: 0.5})

    assert_only_false(lm_pretrain, lm_run(), args, "mrobust_peak_in_drop",
                      maximum_at_step_0_drop_from_the_first_checkpoint)
    # BPE in docs/lm_pretrain.md: 3e-4 at step 0, below 1e-5 once trained (it never uses context)
    bpe = {0: 3e-4, 250: 2e-6, 500: 3e-6, 1000: 5e-6, 1500: 9e-6, 2000: 6e-6, 3000: 3e-6}
    bpe[4000] = 1e-6
    spoil = lambda r: set_lm_mrobust(r, bpe)
    assert_only_false(lm_pretrain, lm_run(), args, "mrobust_falls_3x", spoil)
    # the same with step 0 at 1e-6: noise that "peaks" in the drop and "falls" 9x, below the floor
    flat = {**bpe, 0: 1e-6}
    spoil = lambda r: set_lm_mrobust(r, flat)
    assert_only_false(lm_pretrain, lm_run(), args, "mrobust_falls_3x", spoil)
