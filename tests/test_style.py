"""The reading budgets of the developers' guide: lines of at most 100 characters in the four scripts,
each file within its line total, and common.py free of side effects at import."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUDGETS = {"parity.py": 1000, "pcfg.py": 1300, "lm_pretrain.py": 1000, "common.py": 300,
           "README.md": 300}


@pytest.mark.parametrize("name", sorted(BUDGETS))
def test_within_its_line_budget(name):
    with open(os.path.join(ROOT, name)) as f:
        lines = f.read().splitlines()
    assert len(lines) <= BUDGETS[name], f"{name}: {len(lines)} lines, budget {BUDGETS[name]}"
    if name.endswith(".py"):
        long = [i + 1 for i, line in enumerate(lines) if len(line) > 100]
        assert not long, f"{name}: lines over 100 characters: {long[:20]}"


def test_importing_common_changes_nothing():
    """A researcher copies common.py into a project: importing it must not set variables there."""
    code = ("import os; before = dict(os.environ); import common; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MKL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]", out
