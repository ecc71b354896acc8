"""bench/gpu_check.sh, the prepared GPU check, runs end to end (a dry run: smoke presets on the CPU; its part 1,
the benches, is skipped there: the tests of each script run its bench in-process, and lm_pretrain's below)."""
import json
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def numbers(line):
    """The numbers printed on a line, in order ("1,234.5" -> 1234.5, "-0.3" -> -0.3)."""
    return [float(x.replace(",", "")) for x in re.findall(r"-?\d[\d,]*(?:\.\d+)?", line)]


def test_gpu_check_dry_run(gpu_check_dry_run):
    out = gpu_check_dry_run  # run in the background since collection (conftest.py, BACKGROUND)
    log = open(os.path.join(out, "gpu_check.log")).read()
    assert log.count("== exit 0 after") == 2, log  # the teacher, the probe
    res = json.loads(open(os.path.join(out, "results.json")).read())
    assert res["probe"]["steps"] == [0, 10, 20]  # capped at CAP steps of a TEACHER_STEPS schedule
    printed = [numbers(line) for line in log.splitlines() if "3-gram M_robust median" in line]  # step, loss, 3, median
    loss = dict(zip(res["teacher"]["steps"], res["teacher"]["val_loss"]))
    median = res["probe"]["m_robust"]["3gram"]["l1"]["median"]
    assert printed == [[s, round(loss[s], 3), 3, round(m, 4)] for s, m in zip(res["probe"]["steps"], median)], log
    assert all(m > 0 for m in median)
    for fig in ("fig_curriculum.png", "fig_probes.png"):  # docs/pcfg_extra.py
        assert os.path.exists(os.path.join(out, fig))


def test_lm_pretrain_bench_prints_throughput(capsys):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import lm_pretrain_bench
    seconds = lm_pretrain_bench.main(["--preset", "smoke", "--data", os.path.join(ROOT, "tests", "data",
                                      "pride_and_prejudice_ch01-12.txt"), "--bench_steps", "2"])
    lines = capsys.readouterr().out.splitlines()
    tokens = 8 * 32  # the smoke preset's global batch of 8 sequences of 32 tokens, in 1 process
    assert numbers(lines[0])[:4] == [1, 8, 32, 4] and all(0 < s < 10 for s in seconds.values())
    for role in ("teacher", "student"):
        ms, total, per_process = numbers(next(x for x in lines if x.startswith(f"{role} CE step:")))
        assert ms == pytest.approx(seconds[role] * 1e3, abs=0.05)
        assert total == per_process == pytest.approx(tokens / seconds[role], abs=0.5)
    ms, total, added, ratio = numbers(next(x for x in lines if x.startswith("distillation step:")))
    assert ms == pytest.approx(seconds["distill"] * 1e3, abs=0.05)
    assert total == pytest.approx(tokens / seconds["distill"], abs=0.5)
    assert added == pytest.approx((seconds["distill"] - seconds["student"]) * 1e3, abs=0.05)
    assert ratio == pytest.approx(seconds["distill"] / seconds["student"], abs=0.005)
