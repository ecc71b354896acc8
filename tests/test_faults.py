"""Faults give clear errors, as bad flags do: a damaged checkpoint met by --resume, or an --out that
names a file, stops with exit status 2 and a message naming the file, and writes nothing."""
import os

import pytest

import lm_pretrain
import parity
import pcfg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEXT = os.path.join(ROOT, "tests", "data", "pride_and_prejudice_ch01-12.txt")
SMOKE = {parity: [], pcfg: [], lm_pretrain: ["--data", TEXT]}


def test_resume_from_a_truncated_checkpoint_exits_2_naming_it(tmp_path, kill_at, capsys):
    out = tmp_path / "run"
    argv = ["--preset", "smoke", "--mode", "teacher", "--out", str(out), "--device", "cpu"]
    kill_at(parity.main, argv + ["--halt_at", "teacher:120"])  # killed after the step-100 save
    state = out / "ckpt" / "teacher_state.pt"
    state.write_bytes(state.read_bytes()[:200])  # a copy cut short
    with pytest.raises(SystemExit) as e:
        parity.main(argv + ["--resume"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--resume" in err and str(state) in err, err


@pytest.mark.parametrize("module", [parity, pcfg, lm_pretrain], ids=lambda m: m.__name__)
def test_out_naming_a_file_exits_2_and_writes_nothing(tmp_path, module, capsys):
    target = tmp_path / "results.txt"
    target.write_text("not a run folder\n")
    argv = ["--preset", "smoke", "--mode", "teacher", "--out", str(target), "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        module.main(argv + SMOKE[module] + (["--cache", str(tmp_path / "cache")]
                                            if module is lm_pretrain else []))
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--out" in err and str(target) in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.txt"]
    assert target.read_text() == "not a run folder\n"
