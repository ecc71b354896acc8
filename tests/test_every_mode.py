"""Every --mode of every script runs with the cpu preset's schedule flags (refresh, speed, T, ckpt, lr grid,
temperature) at smoke sizes, so that a preset flag that only one mode resolves (e.g. pcfg.py's --refresh auto,
which once crashed --mode oneshot after the teacher had trained) can never crash another mode again."""
import os

import pytest
import torch

import lm_pretrain
import parity
import parity_sweep  # docs/ (pytest.ini puts it on the path)
import pcfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def flags(preset, keys, scale=None):
    """The cpu preset's values of `keys` as command-line flags; step counts in `scale` shrink to smoke sizes."""
    out = []
    for k in keys:
        if k in preset:
            v = preset[k] if k not in (scale or {}) else max(1, int(preset[k] * scale[k]))
            out += [f"--{k}", str(v)]
    return out


def run_modes(main, base, teacher_out, modes, tmp_path):
    main(base + ["--mode", "teacher", "--out", teacher_out])
    for mode in modes:
        res = main(base + ["--mode", mode, "--teacher_dir", teacher_out, "--out", str(tmp_path / mode)])
        assert res is not None, mode
    main(base + ["--mode", "all", "--out", str(tmp_path / "all")])


@pytest.mark.parametrize("objective", ["mlm", "boundary"])
def test_pcfg_every_mode_with_the_cpu_schedule_flags(tmp_path, objective):
    cpu = pcfg.PRESETS[("cpu", objective)]
    base = ["--preset", "smoke", "--objective", objective, "--seeds", "0", "--level", "3"]
    base += flags(cpu, ["refresh", "speed", "lr_grid", "temperature", "two_shot_sweep"])
    run_modes(pcfg.main, base, str(tmp_path / "teacher"), ["probe", "ce", "oneshot", "progressive", "two_shot"],
              tmp_path)


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_parity_every_mode_with_the_cpu_schedule_flags(tmp_path, arch):
    cpu, smoke = parity.PRESETS[("cpu", arch)], parity.PRESETS[("smoke", arch)]
    base = ["--preset", "smoke", "--arch", arch, "--seeds", "0"]
    scale = smoke["steps"] / cpu["steps"]
    base += flags(cpu, ["speed", "lr_grid", "temperature", "T", "extract_steps"], {"T": scale, "extract_steps": scale})
    run_modes(parity.main, base, str(tmp_path / "teacher"), ["probe", "ce", "oneshot", "progressive", "two_shot",
                                                             "extract"], tmp_path)
    parity_sweep.main(base + ["--out", str(tmp_path / "sweep")])  # the width sweep: docs/parity_sweep.py


def test_lm_pretrain_every_mode_with_the_cpu_schedule_flags(tmp_path):
    cpu, smoke = lm_pretrain.PRESETS["cpu"], lm_pretrain.PRESETS["smoke"]
    first = lambda p: int(p["budgets"].split(",")[0])
    base = ["--preset", "smoke", "--data", TEXT, "--cache", str(tmp_path / "cache"), "--seeds", "0"]
    base += flags(cpu, ["refresh", "lr_grid", "T"], {"T": first(smoke) / first(cpu)})
    run_modes(lm_pretrain.main, base, str(tmp_path / "teacher"), ["probe", "ce", "oneshot", "progressive",
                                                                  "two_shot"], tmp_path)
