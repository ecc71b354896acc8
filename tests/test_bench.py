"""bench/gpu_check.sh, the prepared GPU check, runs end to end (a dry run: smoke presets on the CPU)."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "check"
    env = dict(os.environ, PYTHON=sys.executable, PRESET="smoke", DEVICE="cpu", TEACHER_STEPS="40", CAP="20",
               EVERY="10", RUNS=str(tmp_path), OMP_NUM_THREADS="1")
    r = subprocess.run(["bash", os.path.join(ROOT, "bench", "gpu_check.sh"), str(out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    log = (out / "gpu_check.log").read_text()
    assert log.count("== exit 0 after") == 6, log  # four benches, the teacher, the probe
    res = json.loads((out / "results.json").read_text())
    assert res["probe"]["steps"] == [0, 10, 20]  # capped at CAP steps of a TEACHER_STEPS schedule
    assert "3-gram M_robust median" in log
    assert (out / "fig_curriculum.png").exists() and (out / "fig_probes.png").exists()  # docs/pcfg_extra.py
