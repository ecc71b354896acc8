"""Tests of parity.py: data, losses, schedules, probe, optimizer, stacking, faults, resume, smoke runs, claim."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import common
import parity
from test_bench import numbers
import parity_extra  # docs/ (pytest.ini puts it on the path)
import parity_sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args_for(*argv):
    return parity.parse_args(["--out", "/nonexistent/unused", *argv])


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # one thread, as the tests in this process (conftest.py)


def run_cli(*argv, cwd=ROOT):
    return subprocess.run([sys.executable, os.path.join(ROOT, "parity.py"), *argv], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------------------------------------------- data

def test_labels_are_the_parity_of_the_support():
    x = torch.tensor([[1., 1., 1., -1.], [-1., 1., 1., 1.], [-1., -1., 1., -1.], [1., -1., -1., -1.]])
    # support {0,1,2}: products +1, -1, +1, +1 -> class 0, 1, 0, 0 (class 1 <=> parity -1, as in the paper's code)
    assert parity.parity_labels(x, [0, 1, 2]).tolist() == [0, 1, 0, 0]
    assert parity.parity_labels(x, [3]).tolist() == [1, 0, 1, 1]


def test_samples_are_uniform_signs_with_consistent_labels():
    g = parity.generator("cpu", 0, 1)
    x, y = parity.sample(g, (50, 64), 10, [2, 5, 7])
    assert x.shape == (50, 64, 10) and y.shape == (50, 64)
    assert set(x.unique().tolist()) == {-1.0, 1.0}
    assert abs(x.mean().item()) < 0.05 and abs(y.float().mean().item() - 0.5) < 0.05
    assert torch.equal(y, (x[..., [2, 5, 7]].prod(-1) < 0).long())
    x2, _ = parity.sample(g, (50, 64), 10, [2, 5, 7])
    assert not torch.equal(x, x2)  # fresh samples every call
    x3, _ = parity.sample(parity.generator("cpu", 0, 1), (50, 64), 10, [2, 5, 7])
    assert torch.equal(x, x3)  # ... but the same seed gives the same stream


def test_random_support_is_fixed_by_teacher_seed():
    a = args_for("--preset", "smoke", "--random_support", "1", "--teacher_seed", "3")
    b = args_for("--preset", "smoke", "--random_support", "1", "--teacher_seed", "3")
    assert a.support == b.support and len(a.support) == a.k and len(set(a.support)) == a.k
    assert args_for("--preset", "smoke").support == list(range(a.k))


# ---------------------------------------------------------------------------------------------------- losses

def test_distillation_at_tiny_temperature_is_ce_on_teacher_argmax():
    torch.manual_seed(0)
    s, t = torch.randn(64, 5), torch.randn(64, 5) * 30
    loss = common.soft_cross_entropy(s, common.distill_targets(t, 1e-20))
    assert torch.allclose(loss, F.cross_entropy(s, t.argmax(-1), reduction="none"))
    assert torch.isfinite(common.distill_targets(t * 1e30, 1e-20)).all()


def test_distillation_at_temperature_one_is_kl_plus_entropy():
    torch.manual_seed(1)
    s, t = torch.randn(32, 3), torch.randn(32, 3)
    q = torch.softmax(t, -1)
    kl = (q * (q.log() - torch.log_softmax(s, -1))).sum(-1)
    entropy = -(q * q.log()).sum(-1)
    assert torch.allclose(common.soft_cross_entropy(s, common.distill_targets(t, 1.0)), kl + entropy, atol=1e-6)


def test_lr_schedule():
    assert common.lr_factor(0, 100, "constant") == 1.0
    assert common.lr_factor(0, 100, "cosine") == 1.0
    assert abs(common.lr_factor(100, 100, "cosine", floor=0.1) - 0.1) < 1e-12
    assert abs(common.lr_factor(50, 100, "cosine") - 0.5) < 1e-12
    # 6% warmup is over optimizer steps (the official transformer code's warmup never ended)
    assert common.lr_factor(5, 100, "cosine", warmup=0.06) == 1.0
    assert common.lr_factor(0, 100, "cosine", warmup=0.06) == 1 / 6
    assert common.lr_factor(6, 100, "cosine", warmup=0.06) == 1.0


# ---------------------------------------------------------------------------------------------------- schedules

def test_progressive_oneshot_and_two_shot_schedules():
    a = args_for("--preset", "smoke", "--speed", "1", "--T", "100")
    saved = [0, 50, 100, 150, 200]
    assert a.refresh == a.ckpt_every == 50  # --refresh defaults to --ckpt_every
    assert [parity.schedule_ckpt("progressive", t, saved, a) for t in (0, 1, 49, 50, 51, 199, 400)] == \
           [50, 50, 50, 100, 100, 200, 200]  # common.progressive_ckpt: one refresh ahead, then the final
    assert parity.schedule_ckpt("oneshot", 0, saved, a) == 200
    assert [parity.schedule_ckpt("two_shot", t, saved, a, stage1=50) for t in (0, 99, 100, 300)] == [50, 50, 200, 200]
    a.speed = 2.0
    assert [parity.schedule_ckpt("progressive", t, saved, a) for t in (0, 49, 50, 75, 101)] == [100, 100, 200, 200, 200]
    a.speed, a.refresh = 1.0, 100
    assert [parity.schedule_ckpt("progressive", t, saved, a) for t in (0, 99, 100)] == [100, 100, 200]


# ---------------------------------------------------------------------------------------------------- probe

def test_probe_is_exact_on_a_hand_built_function():
    g = parity.generator("cpu", 0, 4)
    x, _ = parity.sample(g, (20_000,), 6, [0, 1, 2])
    p = x[:, 0].clone()  # f(x) = x_0
    corr = parity.correlations(p, x, [[0], [1], [4]])
    assert corr[0] == 1.0  # E[x_0 * x_0] = 1 on any sample
    assert max(corr[1:]) < 5 / math.sqrt(len(x))
    p2 = x[:, 0] * x[:, 1] * 0.25  # degree-2 signal of size 0.25 (chi^2 = 1: exact)
    corr2 = parity.correlations(p2, x, [[0, 1], [0, 2], [3, 4]])
    assert abs(corr2[0] - 0.25) < 1e-6 and max(corr2[1:]) < 0.02


def test_monomials_cover_the_support_and_avoid_it_off_support():
    a = args_for("--preset", "smoke", "--n", "12", "--k", "4", "--probe_off", "30")
    mons = parity.monomials(a)
    assert sorted(mons) == [1, 2, 3]
    for d, (inside, outside) in mons.items():
        assert len(inside) == math.comb(4, d)
        expected = min(30, math.comb(12, d) - math.comb(4, d))  # degree 1 has only n - k off-support ones
        assert len(outside) == expected and len({tuple(o) for o in outside}) == expected
        assert all(len(o) == d and not set(o) <= set(a.support) for o in outside)


# ---------------------------------------------------------------------------------------------------- models

def test_our_adam_matches_torch_adam_per_stacked_model():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 2)
    lrs = [1e-2, 1e-3, 5e-2]
    ours = torch.nn.Parameter(w.clone())
    opt = parity.Optimizer([ours], "adam", lrs, betas=(0.9, 0.95))
    refs = [torch.nn.Parameter(w[i].clone()) for i in range(3)]
    ref_opts = [torch.optim.Adam([r], lr=lr, betas=(0.9, 0.95)) for r, lr in zip(refs, lrs)]
    for _ in range(5):
        x = torch.randn(4)
        (ours * x[None, :, None]).sin().sum().backward()
        opt.step()
        for r, o in zip(refs, ref_opts):
            o.zero_grad()
            (r * x[:, None]).sin().sum().backward()
            o.step()
    for i in range(3):
        assert torch.allclose(ours[i], refs[i], atol=1e-6)


@pytest.mark.parametrize("method", ["ce", "oneshot"])
def test_the_engine_runs_the_mechanisms_student_step(method):
    """A student in the engine's stack (stacked_step, our Adam) follows the same student trained alone
    by section 5's student_step with torch.optim.Adam, on labels and on a teacher's outputs."""
    a = args_for("--preset", "smoke", "--seeds", "0,1", "--temperature", "1.0")
    teacher = parity.make_model(a, "teacher", 3)
    alone = parity.make_model(a, "student", 1)
    opt = torch.optim.Adam(alone.parameters(), 1e-2, betas=a.beta_pair)
    specs = [{"method": method, "lr": lr, "seed": s, "stage1": None} for lr, s in ((3e-3, 0), (1e-2, 1))]
    models = [parity.make_model(a, "student", sp["seed"]) for sp in specs]
    params = parity.stack(models, a)
    sopt = parity.Optimizer(params.values(), "adam", [sp["lr"] for sp in specs], a.beta_pair)
    slots = type("OneTeacher", (), {"row_of_student": torch.zeros(2, dtype=torch.long),
                                    "logits": lambda self, x: teacher(x)[None]})()
    step = parity.stacked_step(a, specs, models[0], params, sopt, slots if method != "ce" else None)
    for i in range(5):
        x, y = parity.sample(parity.generator("cpu", i, 2), (2, a.batch), a.n, a.support)
        step(x, y)
        parity.student_step(alone, opt, x[1], y[1], teacher if method != "ce" else None, 1.0)
    for name, p in alone.named_parameters():
        assert torch.allclose(params[name][1].view(p.shape), p, atol=1e-6), name


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_stacked_models_are_independent(arch):
    a = args_for("--preset", "smoke", "--arch", arch)
    models = [parity.make_model(a, "student", 0), parity.make_model(a, "student", 1)]
    params = parity.stack(models, a)  # the engine's stack of the plain modules
    x, _ = parity.sample(parity.generator("cpu", 0, 1), (2, 8), a.n, a.support)
    out = parity.run_stacked(models[0], params, x)
    assert torch.allclose(out[1], models[1](x[1]), atol=1e-5)
    out[0].sum().backward()  # the loss of model 0 gives model 1 no gradient
    assert all(p.grad[1].abs().max() == 0 for p in params.values())


def test_transformer_is_causal_and_reads_the_last_position():
    a = args_for("--preset", "smoke", "--arch", "transformer", "--layers", "2")
    m = parity.make_model(a, "teacher", 0)
    x, _ = parity.sample(parity.generator("cpu", 0, 1), (4,), a.n, a.support)
    # the last block computes the last position only; it must equal the full causal forward
    h = F.one_hot(((1 - x) / 2).long(), 2).float() @ m.wte.w + m.wpe
    for block in m.blocks:
        h = block(h)
    full = m.ln_f(h[:, -1]) @ m.head.w
    assert torch.allclose(m(x), full, atol=1e-5)
    x2 = x.clone()
    x2[..., -1] *= -1  # the last token is seen by the last position
    assert not torch.allclose(m(x), m(x2))


def test_extraction_targets_losses_and_sub_stages(tmp_path):
    """Curriculum extraction's stage 1 on a 2-layer Transformer: one P per layer and seed, N(0, 1/d_teacher) from
    seed 999 + seed; the target of layer l is block l's output @ P, standardised per unit and position; the loss is
    the normalised MSE (a student at 0 scores 1, one on the target 0) of layer l in sub-stage l only."""
    teacher = str(tmp_path / "t")
    flags = ["--preset", "smoke", "--arch", "transformer", "--layers", "2", "--seeds", "0,1"]
    parity.main(flags + ["--mode", "teacher", "--out", teacher])
    a = args_for(*flags, "--teacher_dir", teacher, "--extract_steps", "20", "--student_head_dim", "2")
    ext = parity.Extraction(a, teacher, 60)
    dT, dS = a.teacher_heads * a.head_dim, a.student_heads * a.student_head_dim
    assert (dT, dS) == (16, 2) and parity.make_model(a, "student").wte.w.shape == (2, dS)  # the student's width
    assert [tuple(P.shape) for P in ext.P] == [(2, dT, dS)] * 2
    g = torch.Generator().manual_seed(999 + 1)
    assert torch.equal(ext.P[0][1], torch.randn(dT, dS, generator=g) / math.sqrt(dT))
    model = parity.make_model(a, "teacher")
    model.load_state_dict(parity.load_teacher(teacher, 60, "cpu")["model"])
    t_hidden = parity.record_hidden(model)
    x, _ = parity.sample(parity.generator("cpu", 7, 1), (2, 256), a.n, a.support)  # (seeds, B, n): fresh samples
    with torch.no_grad():  # per layer: (1 row, seeds x B, [n,] dT)
        parity.run_stacked(model, parity.stack([model], a), x.reshape(1, 512, -1))
    target = [torch.stack([(h[0].view(2, 256, -1, dT)[s] @ P[s] - mu[s]) / sd[s] for s in range(2)])
              for h, P, mu, sd in zip(t_hidden, ext.P, ext.mu, ext.sd)]
    assert target[0].shape == (2, 256, a.n, dS) and target[1].shape == (2, 256, 1, dS)  # the last block: last position
    for t in target:  # each unit at each position: mean ~0, std ~1 (the raw projections: std ~0.02)
        assert t.mean(1).abs().max() < 0.3 and 0.8 < t.std(1).min() and t.std(1).max() < 1.2
    seed_idx = torch.tensor([0, 1, 1])  # three students: seeds 0, 1, 1
    on_target, at_zero = [t[seed_idx] for t in target], [torch.zeros_like(t[seed_idx]) for t in target]
    loss = lambda s_hidden, t: ext.stage1_loss(t_hidden, s_hidden, seed_idx, torch.tensor(float(t))).tolist()
    assert loss(at_zero, 0) == pytest.approx([1, 1, 1]) and loss(on_target, 19) == pytest.approx([0, 0, 0], abs=1e-6)
    mixed = [on_target[0], at_zero[1]]
    assert loss(mixed, 9) == pytest.approx([0, 0, 0], abs=1e-6) and loss(mixed, 10) == pytest.approx([1, 1, 1])


def test_extract_learns_from_the_final_teacher_alone(tmp_path, monkeypatch):
    """--mode extract reads the final teacher checkpoint and no other (every teacher weight a model gets comes through
    load_teacher; main reads only the saved accuracies), and its student learns parity."""
    teacher = str(tmp_path / "t")
    parity.main(["--preset", "smoke", "--mode", "teacher", "--out", teacher])
    asked, real = [], parity.load_teacher
    monkeypatch.setattr(parity, "load_teacher", lambda run, step, device: asked.append(step) or real(run, step, device))
    r = parity.main(["--preset", "smoke", "--mode", "extract", "--teacher_dir", teacher, "--seeds", "0", "--lr", "1e-2",
                     "--out", str(tmp_path / "extract")])
    assert asked and set(asked) == {400} and list(r["students"]) == ["extract"]
    assert r["students"]["extract"]["final_acc"][0] >= 0.9


def test_extract_students_are_slices_like_the_others(tmp_path):
    """In --mode all the extract students share their seed's init and batches and the final teacher's row with the
    one-shot students: without a stage 1 (--extract_steps 0) they are one-shot, number for number."""
    res = parity.main(["--preset", "smoke", "--steps", "100", "--seeds", "0,1", "--extract_steps", "0",
                       "--out", str(tmp_path / "all")])
    assert res["students"]["extract"]["by_lr"] == res["students"]["oneshot"]["by_lr"]
    assert res["students"]["extract"]["acc"] == res["students"]["oneshot"]["acc"]


# ---------------------------------------------------------------------------------------------------- faults

@pytest.mark.parametrize("argv, flag", [
    (["--k", "20", "--n", "10"], "--k"),
    (["--student_width", "0"], "--student_width"),
    (["--mode", "bogus"], "--mode"),
    (["--lr_grid", "1e-3,x"], "--lr_grid"),
    (["--temperature", "0"], "--temperature"),
    (["--eval_every", "7"], "--eval_every"),
    (["--ckpt", "55"], "--ckpt"),
    (["--teacher_dir", "/definitely/missing"], "--teacher_dir"),
])
def test_bad_input_names_the_flag_and_writes_nothing(tmp_path, capsys, argv, flag):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        parity.main(["--preset", "smoke", "--out", str(out), *argv])
    assert e.value.code == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


def test_a_methods_own_step_flags_are_checked_only_where_it_runs(tmp_path, capsys):
    """--T belongs to two_shot and --extract_steps to extract: a shorter --steps for another mode is not refused."""
    for mode in ("progressive", "extract"):
        assert args_for("--mode", mode, "--steps", "4000").T == 5000  # the cpu preset's T, above 4000
    for mode, flag in (("two_shot", "--T"), ("all", "--T"), ("extract", "--extract_steps")):
        with pytest.raises(SystemExit):
            args_for("--mode", mode, "--steps", "400")
        assert f"error: {flag}: must be in [0, 400]" in capsys.readouterr().err


def test_paper_presets_use_the_official_parity_codes_adam_betas():
    """The official parity code uses torch's Adam defaults (0.9, 0.999); the cpu presets keep (0.9, 0.95)."""
    for arch in ("mlp", "transformer"):
        assert args_for("--preset", "paper", "--arch", arch).beta_pair == (0.9, 0.999)
        assert args_for("--arch", arch).beta_pair == (0.9, 0.95)


def test_bad_input_exit_status_from_the_command_line(tmp_path):
    r = run_cli("--preset", "smoke", "--k", "99", "--out", str(tmp_path / "run"))
    assert r.returncode == 2 and "error: --k" in r.stderr and not (tmp_path / "run").exists()


def test_every_float_flag_refuses_nan_and_inf(tmp_path, capsys):
    out = tmp_path / "run"
    floats = [a.option_strings[0] for a in parity.build_parser()._actions if a.type is float]
    assert {"--teacher_lr", "--temperature", "--speed", "--teacher_warmup", "--floor", "--dropout"} <= set(floats)
    for flag in floats + ["--lr_grid", "--betas"]:
        for bad in ("nan", "inf"):
            value = {"--lr_grid": f"1e-2,{bad}", "--betas": f"0.9,{bad}"}.get(flag, bad)
            with pytest.raises(SystemExit) as e:
                parity.main(["--preset", "smoke", "--out", str(out), flag, value])
            assert e.value.code == 2 and f"error: {flag}: " in capsys.readouterr().err, (flag, value)
    assert not out.exists()


def test_teacher_dir_of_another_task_or_arch_is_refused(tmp_path, capsys):
    teacher = tmp_path / "teacher"
    parity.main(["--preset", "smoke", "--mode", "teacher", "--out", str(teacher)])
    (tmp_path / "empty").mkdir()
    for argv in (["--n", "13"], ["--arch", "transformer"], ["--teacher_width", "128"]):
        with pytest.raises(SystemExit) as e:
            parity.main(["--preset", "smoke", "--mode", "oneshot", "--teacher_dir", str(teacher),
                         "--out", str(tmp_path / "x"), *argv])
        assert e.value.code == 2 and "--teacher_dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        parity.main(["--preset", "smoke", "--teacher_dir", str(tmp_path / "empty"), "--out", str(tmp_path / "y")])
    assert e.value.code == 2 and "no teacher checkpoints" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_existing_run_is_not_overwritten_without_resume(tmp_path, capsys):
    out = tmp_path / "run"
    parity.main(["--preset", "smoke", "--mode", "teacher", "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        parity.main(["--preset", "smoke", "--mode", "teacher", "--out", str(out)])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err


def test_nan_stops_the_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        parity.main(["--preset", "smoke", "--mode", "teacher", "--teacher_optim", "sgd", "--teacher_lr", "1e30",
                     "--out", str(tmp_path / "run")])
    assert e.value.code == 3 and "stopping" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- runs

def without_config(results):
    return {k: v for k, v in results.items() if k != "config"}


def test_resume_after_a_crash_gives_the_same_results(tmp_path, kill_at):
    base = ["--preset", "smoke", "--steps", "300", "--save_every", "100", "--seeds", "0,1", "--lr_grid", "3e-3",
            "--extract_steps", "250"]  # the halt at 230 falls in extract's stage 1
    ref = parity.main(base + ["--out", str(tmp_path / "ref")])
    for halt in ("teacher:170", "students:230"):
        out = str(tmp_path / halt.replace(":", "_"))
        kill_at(parity.main, base + ["--out", out, "--halt_at", halt])
        parity.main(base + ["--out", out, "--resume"])
        with open(os.path.join(out, "results.json")) as f:
            assert without_config(json.load(f)) == json.loads(json.dumps(without_config(ref)))


def test_same_seed_same_numbers_and_batching_does_not_change_a_student(tmp_path):
    a = parity.main(["--preset", "smoke", "--mode", "ce", "--seeds", "0,1", "--out", str(tmp_path / "a")])
    b = parity.main(["--preset", "smoke", "--mode", "ce", "--seeds", "0,1", "--out", str(tmp_path / "b")])
    assert without_config(a) == without_config(b)
    c = parity.main(["--preset", "smoke", "--mode", "ce", "--seeds", "1", "--lr", "3e-3",
                     "--out", str(tmp_path / "c")])
    acc_a = a["students"]["ce"]["by_lr"]["0.003"]["final_acc"][1]
    assert abs(c["students"]["ce"]["final_acc"][0] - acc_a) < 1e-3


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_smoke_all_writes_results_and_figures(tmp_path, arch):
    out = tmp_path / arch
    res = parity.main(["--preset", "smoke", "--arch", arch, "--out", str(out)])
    with open(out / "results.json") as f:
        saved = json.load(f)
    assert set(saved) >= {"config", "teacher", "students", "two_shot_ckpt", "probe"}
    assert set(saved["teacher"]) >= {"final_acc", "steps_to"} and set(saved["teacher"]["steps_to"]) == {"0.9", "0.95"}
    for mode in ("ce", "oneshot", "progressive", "two_shot", "extract"):
        r = saved["students"][mode]
        assert len(r["final_acc"]) == 3 and set(r["steps_to"]) == {"0.9", "0.95"}
        assert len(r["steps_to"]["0.9"]) == 3
    assert set(saved["probe"]) >= {"steps", "acc", "degrees"}
    assert saved["two_shot_ckpt"] in saved["probe"]["steps"]
    parity_extra.main([str(out)])  # the study figure of every probe degree, redrawn from the run folder
    for fig in ("fig1_accuracy.png", "fig3_curriculum.png", "probe_degrees.png"):
        assert (out / fig).stat().st_size > 1000
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["role"] for line in lines} == {"teacher", "student"}
    assert res["students"]["ce"]["final_acc"] == saved["students"]["ce"]["final_acc"]


def test_single_modes_and_sweep_run(tmp_path):
    teacher = str(tmp_path / "t")
    parity.main(["--preset", "smoke", "--mode", "teacher", "--out", teacher])
    one = ["--preset", "smoke", "--teacher_dir", teacher, "--seeds", "0", "--lr", "3e-3", "--steps", "100"]
    for mode in ("ce", "oneshot", "progressive", "two_shot", "probe"):
        r = parity.main(one + ["--mode", mode, "--out", str(tmp_path / mode)])
        if mode != "probe":
            assert list(r["students"]) == [mode]
    r = parity.main(one + ["--mode", "two_shot", "--ckpt", "100", "--out", str(tmp_path / "ts")])
    assert r["students"]["two_shot"]["stage1"] == 100
    s = parity_sweep.main(["--preset", "smoke", "--seeds", "0,1", "--out", str(tmp_path / "sweep")])
    assert s["sweep"]["sizes"] == [64, 256] and len(s["sweep"]["steps_to_0.95"][0]) == 2
    assert (tmp_path / "sweep" / "sweep.png").exists()
    with pytest.raises(SystemExit) as e:  # the sweep's own flags are checked before anything is written
        parity_sweep.main(["--preset", "smoke", "--sweep", "0,4", "--out", str(tmp_path / "bad")])
    assert e.value.code == 2 and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_paper_preset_builds_and_takes_its_first_steps(tmp_path, monkeypatch, arch):
    cap = ["--preset", "paper", "--arch", arch, "--device", "cpu", "--eval_size", "64", "--probe_samples", "64",
           "--teacher_steps", "4", "--steps", "4", "--eval_every", "2", "--ckpt_every", "2", "--T", "2",
           "--extract_steps", "2", "--seeds", "0", "--lr_grid", "1e-3"]
    cap += ["--teacher_batch", "4", "--batch", "4"] if arch == "transformer" else []  # the paper's models, tiny runs
    monkeypatch.setattr(parity, "STATS_SAMPLES", 64)  # extract's statistics: 8192 paper-sized forwards take a minute
    a = parity.parse_args(["--preset", "paper", "--arch", arch, "--out", str(tmp_path)])
    assert (a.n, a.k) == (100, 6)
    if arch == "mlp":
        assert (a.teacher_width, a.student_width, a.teacher_optim, a.teacher_batch) == (50_000, 100, "sgd", 1)
    else:
        assert (a.layers, a.head_dim, a.teacher_heads, a.student_heads, a.batch) == (2, 8, 32, 4, 32)
    res = parity.main(cap + ["--out", str(tmp_path / "run")])
    assert res["teacher"]["steps"] == [0, 2, 4] and len(res["students"]) == 7


@pytest.mark.parametrize("arch", ["mlp", "transformer"])
def test_bench_prints_throughput(capsys, arch):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import parity_bench
    argv = ["--preset", "smoke", "--arch", arch, "--bench_steps", "5"]
    parity_bench.main(argv)
    out = capsys.readouterr().out
    lines = out.splitlines()
    a, flops = parity_bench.parse_args(argv), lambda role: parity_bench.flops_per_sample(a, role)
    peak = numbers(next(x for x in lines if "matmul peak" in x))[-3]  # "... fp32 matmul peak P GFLOP/s (1024x1024)"
    of_peak = lambda g: pytest.approx(100 * g / peak, abs=0.06 + 100 * (0.05 / peak + g * 0.5 / peak ** 2))  # printed
    samples, steps, gflops, percent = numbers(next(x for x in lines if x.startswith("teacher step:")))
    assert peak > 1 and steps > 0 and samples == pytest.approx(steps * a.teacher_batch, abs=a.teacher_batch / 2)
    assert gflops == pytest.approx(samples * 3 * flops("teacher") / 1e9, rel=1e-3, abs=0.05), out
    assert percent == of_peak(gflops), out
    line = next(x for x in lines if x.startswith("student step ("))
    S, methods, lrs, seeds, rows, samples, steps, gflops, percent, teacher_share = numbers(line)
    nS = len(a.seed_list)
    assert (S, methods, lrs, seeds, rows) == (4 * len(a.lrs) * nS, 4, len(a.lrs), nS, 2)  # two teacher rows
    assert steps > 0 and samples == pytest.approx(steps * S * a.batch, abs=S * a.batch / 2)
    f_student, f_teacher = 3 * flops("student") * S, flops("teacher") * 2 * seeds  # per sample of the batch
    assert gflops == pytest.approx(samples / S * (f_student + f_teacher) / 1e9, rel=1e-3, abs=0.05), out
    assert percent == of_peak(gflops), out
    assert teacher_share == round(100 * f_teacher / (f_student + f_teacher))


# ---------------------------------------------------------------------------------------------------- claim

def test_claim_progressive_and_two_shot_beat_ce_and_oneshot_in_every_seed(parity_claim):
    """The paper's claim on the CPU MLP preset with a shorter teacher (8000 steps) and student budget (9000),
    progressive at speed 2, one learning rate (1e-2) and seeds 0, 1, 2 (conftest.CLAIM_ARGV; the run starts in the
    background at collection). Each of the run's checks is true, and the numbers behind them are those of
    docs/parity.md: progressive and two_shot(auto) reach 90% by step 4500 in every seed, CE and one-shot never in
    9000 (at most half their steps); the chosen checkpoint's in-support correlations stand at least 3x above the
    off-support ones, and the final teacher's at most a third of that. Smaller tasks we tried ((30,4), (40,4),
    (40,5)) let CE students solve parity too soon for this to hold."""
    res = parity_claim
    cfg, st = res["config"], res["students"]
    assert (cfg["steps"], cfg["teacher_steps"], cfg["speed"], cfg["lr_grid"]) == (9000, 8000, 2.0, "1e-2")
    assert set(res["checks"]) >= {"half_the_steps_every_seed", "chosen_ckpt_3x", "final_ckpt_3x_below_chosen"}
    assert all(res["checks"].values()), res["checks"]  # each check of the run, as results.json says
    for m in ("ce", "oneshot", "progressive", "two_shot"):
        assert list(st[m]["by_lr"]) == ["0.01"] and st[m]["seeds"] == [0, 1, 2], m
    assert st["ce"]["steps_to"]["0.9"] == st["oneshot"]["steps_to"]["0.9"] == [None] * 3  # never in 9000 steps
    for m in ("progressive", "two_shot"):
        assert all(s is not None and s <= 4500 for s in st[m]["steps_to"]["0.9"]), (m, st[m]["steps_to"])
    assert 0 < res["two_shot_ckpt"] == res["probe"]["auto_ckpt"] < 8000  # a checkpoint inside the teacher's run
    chosen, final = res["measured"]["chosen_ckpt_in_over_off"], res["measured"]["final_ckpt_in_over_off"]
    assert max(chosen.values()) >= 3 and max(final.values()) <= max(chosen.values()) / 3, (chosen, final)
