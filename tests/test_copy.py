"""Each script runs from a copy: the files its docstring's 'To copy' line names, alone in a fresh folder, run
their smoke preset (the cheapest mode that writes results.json) and exit 0. No import reaches back into the repo:
one Python process (torch loads once) runs each copy in turn from its own folder, with only that folder on the
path and the other copies' modules forgotten."""
import json
import os
import shutil
import subprocess
import sys

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


# Runs each (folder, script, argv) of the JSON list in sys.argv[1] as `python script argv` from inside folder.
DRIVER = """
import json, os, runpy, sys
for folder, script, argv in json.loads(sys.argv[1]):
    os.chdir(folder)
    sys.path[0] = folder
    for name in ["common", *os.listdir(os.path.dirname(folder))]:  # the folders are named after the modules
        sys.modules.pop(name, None)
    sys.argv = [script, *argv]
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        assert e.code in (0, None), (script, e.code)
"""


def test_a_copy_of_each_script_runs_its_smoke_preset(tmp_path):
    runs = []
    for script, (needs, argv) in sorted(CASES.items()):
        docstring_end = open(os.path.join(ROOT, script)).read().split('"""')[1].rstrip().splitlines()[-1]
        assert docstring_end.startswith("To copy: this file") and all(f in docstring_end for f in needs), script
        folder = tmp_path / script[:-3]
        folder.mkdir()
        for name in [script, *needs]:
            shutil.copy(os.path.join(ROOT, name), folder)
        shutil.copy(FIXTURE, folder)
        runs.append([str(folder), script, ["--preset", "smoke", *argv, "--out", "out", "--device", "cpu"]])
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], cwd=tmp_path, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    for folder, script, _ in runs:
        saved = json.loads((tmp_path / folder / "out" / "results.json").read_text())
        assert saved["config"]["preset"] == "smoke" and saved["config"]["mode"] == "ce", script
