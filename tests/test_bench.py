"""bench/gpu_check.sh, the prepared GPU check, runs end to end (a dry run: smoke presets on the CPU; its part 1,
the benches, is skipped there: the tests of each script run its bench in-process, and lm_pretrain's below)."""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(gpu_check_dry_run):
    out = gpu_check_dry_run  # run in the background since collection (conftest.py, BACKGROUND)
    log = open(os.path.join(out, "gpu_check.log")).read()
    assert log.count("== exit 0 after") == 2, log  # the teacher, the probe
    res = json.loads(open(os.path.join(out, "results.json")).read())
    assert res["probe"]["steps"] == [0, 10, 20]  # capped at CAP steps of a TEACHER_STEPS schedule
    assert "3-gram M_robust median" in log
    for fig in ("fig_curriculum.png", "fig_probes.png"):  # docs/pcfg_extra.py
        assert os.path.exists(os.path.join(out, fig))


def test_lm_pretrain_bench_prints_throughput(capsys):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import lm_pretrain_bench
    lm_pretrain_bench.main(["--preset", "smoke", "--data", os.path.join(ROOT, "tests", "data",
                            "pride_and_prejudice_ch01-12.txt"), "--bench_steps", "2"])
    assert "tokens/s" in capsys.readouterr().out
