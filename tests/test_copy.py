"""Each script runs from a copy: the files its docstring's 'To copy' line names, alone in a fresh folder, run
their smoke preset (the cheapest mode that writes results.json) and exit 0. No import reaches back into the repo."""
import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only the copy's folder is importable
ENV["OMP_NUM_THREADS"] = "1"

CASES = {
    "parity.py": (["common.py"], ["--mode", "ce", "--seeds", "0", "--lr_grid", "1e-2", "--steps", "100"]),
    "pcfg.py": (["common.py"], ["--mode", "ce", "--seeds", "0", "--lr_grid", "1e-2", "--budgets", "20"]),
    "lm_pretrain.py": (["common.py"], ["--mode", "ce", "--seeds", "0", "--budgets", "10",
                                      "--data", os.path.basename(FIXTURE), "--cache", "cache"]),
}


@pytest.mark.parametrize("script", sorted(CASES))
def test_a_copy_of_the_script_runs_its_smoke_preset(tmp_path, script):
    needs, argv = CASES[script]
    docstring_end = open(os.path.join(ROOT, script)).read().split('"""')[1].rstrip().splitlines()[-1]
    assert docstring_end.startswith("To copy: this file") and all(f in docstring_end for f in needs)
    for name in [script, *needs]:
        shutil.copy(os.path.join(ROOT, name), tmp_path)
    shutil.copy(FIXTURE, tmp_path)
    r = subprocess.run([sys.executable, script, "--preset", "smoke", *argv, "--out", "out", "--device", "cpu"],
                       cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["config"]["preset"] == "smoke" and saved["config"]["mode"] == "ce"
