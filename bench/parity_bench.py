"""Throughput of parity.py's train steps: samples/s and achieved GFLOP/s against a measured matmul peak.

    python bench/parity_bench.py                                   # the cpu MLP preset
    python bench/parity_bench.py --preset paper --device cuda --bench_steps 2000
    python bench/parity_bench.py --other /tmp/old-checkout     # and an older commit's, same run

Flags are parity.py's (the preset's sizes), plus --bench_steps and --other. The steps timed are
parity.py's own; the teacher's beside a plain PyTorch loop of the same MLP.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parity  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    parser = parity.build_parser()
    parser.add_argument("--bench_steps", type=int, default=200, help="steps timed")
    parser.add_argument("--other", type=str, default=None,
                        help="another checkout (e.g. a clone at an older commit): its "
                             "bench/parity_bench.py runs after this one, same flags, same machine")
    args = common.parse_with_presets(parser, lambda f: parity.PRESETS[(f.preset, f.arch)], argv)
    other, args.other = args.other, None
    parity.validate(args)
    common.check_positive(args, ["bench_steps"])
    args.other = other
    return args


def flops_per_sample(args, role):
    """Forward multiply-adds x 2 per sample (attention included); a train step costs about 3x this."""
    n = args.n
    if args.arch == "mlp":
        w = args.teacher_width if role == "teacher" else args.student_width
        return 2 * (n * w + 2 * w)
    d = args.teacher_heads * args.head_dim if role == "teacher" else args.student_heads * args.student_head_dim
    per_token = args.layers * (12 * d * d + 2 * n * d)  # qkv+proj+mlp, and QK^T, AV (causal: ~half)
    return 2 * n * per_token


def bench(args):
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    size = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    sync()
    t0, reps = time.time(), 0
    while time.time() - t0 < 1.0:
        a @ b
        reps += 1
    sync()
    peak = 2 * size ** 3 * reps / (time.time() - t0) / 1e9
    print(f"device {args.device}: fp32 matmul peak {peak:.0f} GFLOP/s ({size}x{size})")

    # Teacher: parity.py's model with train_teacher's step (torch.optim), and a plain PyTorch loop of the same
    # MLP beside it (nn.Linear layers, torch.optim.Adam or SGD, the same batches).
    xs, ys = parity.sample(parity.generator(args.device, 0, 1), (args.bench_steps, args.teacher_batch),
                           args.n, args.support)
    model = parity.make_model(args, "teacher", 0)
    opt = teacher_optimizer(model.parameters(), args)
    rate = time_steps(lambda i: plain_step(model, opt, xs[i], ys[i]), args, sync)
    f = 3 * flops_per_sample(args, "teacher") * args.teacher_batch
    print(f"teacher step: {rate * args.teacher_batch:,.0f} samples/s, {rate:,.0f} steps/s, "
          f"{rate * f / 1e9:.1f} GFLOP/s ({100 * rate * f / 1e9 / peak:.1f}% of peak)")
    if args.arch == "mlp":
        plain = torch.nn.Sequential(torch.nn.Linear(args.n, args.teacher_width), torch.nn.ReLU(),
                                    torch.nn.Linear(args.teacher_width, 2)).to(device)
        popt = teacher_optimizer(plain.parameters(), args)
        plain_rate = time_steps(lambda i: plain_step(plain, popt, xs[i], ys[i]), args, sync)
        print(f"plain PyTorch loop of the same MLP: {plain_rate * args.teacher_batch:,.0f} samples/s; "
              f"parity.py's teacher step at {rate / plain_rate:.2f}x its speed")

    # Students: the four methods x lrs x seeds of a run, in the steady state of progressive
    # distillation: two teacher rows (the current progressive checkpoint and the final one).
    specs = [{"method": m, "lr": lr, "seed": seed, "stage1": 0 if m == "two_shot" else None}
             for m in ("ce", "oneshot", "progressive", "two_shot") for lr in args.lrs
             for seed in args.seed_list]  # as parity.main builds them
    S, nS = len(specs), len(args.seed_list)
    models = [parity.make_model(args, "student", sp["seed"]) for sp in specs]
    students, params = models[0], parity.stack(models, args)
    sopt = parity.Optimizer(params.values(), args.optim, [sp["lr"] for sp in specs], args.beta_pair)
    slots = parity.TeacherSlots(args, specs, [0])
    slots.size, slots.rows = 2, [0, 1]  # two rows in use, with a CUDA graph too
    slots.params = parity.stack([parity.make_model(args, "teacher", i) for i in range(2)], args)
    slots.row_of_student.copy_(torch.tensor([int(sp["method"] == "progressive") for sp in specs]))
    xs, ys = parity.sample(parity.generator(args.device, 0, 2), (args.bench_steps, nS, args.batch),
                           args.n, args.support)
    x_buf, y_buf, loss = xs[0].clone(), ys[0].clone(), torch.zeros(S, device=device)
    step = parity.stacked_step(args, specs, students, params, sopt, slots)
    run = parity.compile_step(lambda: loss.add_(step(x_buf, y_buf)),
                              list(params.values()) + sopt.tensors() + [loss], args)
    rate = time_steps(lambda i: (x_buf.copy_(xs[i]), y_buf.copy_(ys[i]), run()), args, sync)
    f_student = 3 * flops_per_sample(args, "student") * S * args.batch
    f_teacher = flops_per_sample(args, "teacher") * 2 * nS * args.batch
    print(f"student step ({S} students = 4 methods x {len(args.lrs)} lrs x {nS} seeds; 2 teacher rows): "
          f"{rate * S * args.batch:,.0f} student samples/s, {rate:,.0f} steps/s, "
          f"{rate * (f_student + f_teacher) / 1e9:.1f} GFLOP/s "
          f"({100 * rate * (f_student + f_teacher) / 1e9 / peak:.1f}% of peak; "
          f"teacher forward = {100 * f_teacher / (f_student + f_teacher):.0f}% of the FLOPs)")
    common.check_finite(loss.sum().item(), "benchmark student loss")


def teacher_optimizer(params, args):  # parity.train_teacher's: no momentum, no weight decay
    if args.teacher_optim == "sgd":
        return torch.optim.SGD(params, args.teacher_lr)
    return torch.optim.Adam(params, args.teacher_lr, args.beta_pair)


def plain_step(model, opt, x, y):  # parity.train_teacher's step
    loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def time_steps(run, args, sync):
    """Steps per second of run(i), i = 0..--bench_steps-1, after 5 warm-up steps."""
    for i in range(min(5, args.bench_steps)):
        run(i)
    sync()
    t0 = time.time()
    for i in range(args.bench_steps):
        run(i)
    sync()
    return args.bench_steps / (time.time() - t0)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.teacher_seed)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    bench(args)
    if args.other:  # the same flags, minus --other, for the other checkout's bench
        argv = list(sys.argv[1:] if argv is None else argv)
        i = argv.index("--other")
        flags = argv[:i] + argv[i + 2:]
        script = os.path.join(args.other, "bench", "parity_bench.py")
        print(f"\n--- {script} ---", flush=True)
        subprocess.run([sys.executable, script, *flags], check=True)


if __name__ == "__main__":
    main()
