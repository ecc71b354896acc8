"""The same numbers: every mode of every script, rerun at its smoke preset on one thread with the arithmetic
pinned (make_goldens.py), writes the numbers of results.json committed in tests/golden/, bit for bit on any x86
CPU with AVX2. The reruns are `make_goldens.py --out`, started in the background at collection (conftest.py)."""
import importlib.util
import json
import math
import os
import platform

import pytest
import torch

import common

HERE = os.path.dirname(os.path.abspath(__file__))
spec = importlib.util.spec_from_file_location("make_goldens", os.path.join(HERE, "golden", "make_goldens.py"))
goldens = importlib.util.module_from_spec(spec)
spec.loader.exec_module(goldens)


def differences(a, b, where=""):
    """Paths at which a and b differ; floats may differ by rel 1e-9 (printing), nothing else may."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}/{k}: missing on one side" for k in sorted(set(a) ^ set(b))]
        return out + [d for k in sorted(set(a) & set(b)) for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    if isinstance(a, float) and isinstance(b, float) and not isinstance(a, bool):
        same = a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-300)
        return [] if same else [f"{where}: {a!r} != {b!r}"]
    return [] if a == b and type(a) is type(b) else [f"{where}: {a!r} != {b!r}"]


def unsupported():
    """Why this machine cannot reproduce the goldens' bits, or None. make_goldens.py pins the arithmetic to the
    AVX2 code paths of ATen, MKL and oneDNN, which every x86 CPU with AVX2 (AVX-512 ones too) can run."""
    with open(os.path.join(os.path.dirname(HERE), "requirements.txt")) as f:
        pinned = next(line.split("==")[1].strip() for line in f if line.startswith("torch=="))
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the goldens are x86 arithmetic; this is {platform.machine()}"
    if torch.__version__ != pinned + "+cpu":
        return f"the goldens need the requirements' CPU build torch {pinned}+cpu; this is {torch.__version__}"
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return f"the goldens need AVX2; this CPU offers {torch.backends.cpu.get_cpu_capability()}"
    return None


@pytest.mark.skipif(unsupported() is not None, reason=str(unsupported()))
@pytest.mark.parametrize("group", sorted(goldens.GROUPS))
def test_every_mode_gives_the_golden_numbers(golden_runs, group):
    for mode in ["teacher"] + goldens.GROUPS[group][2]:
        want, got = (common.read_json(goldens.path_of(group, mode, d)) for d in (goldens.HERE, golden_runs))
        diff = differences(want, got)
        assert not diff, f"{group} --mode {mode}: " + "; ".join(diff[:10])
