"""Throughput of parity.py's train steps: samples/s and achieved GFLOP/s against a measured matmul peak.

    python bench/parity_bench.py                                   # the cpu MLP preset
    python bench/parity_bench.py --preset paper --device cuda --bench_steps 2000

Flags are parity.py's (the preset's sizes), plus --bench_steps. The steps timed are parity.py's own.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parity  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    parser = parity.build_parser()
    parser.add_argument("--bench_steps", type=int, default=200, help="steps timed")
    args = common.parse_with_presets(parser, lambda f: parity.PRESETS[(f.preset, f.arch)], argv)
    parity.validate(args)
    common.check_positive(args, ["bench_steps"])
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

    # Teacher: the real train step (CUDA graph included), timed over --bench_steps.
    model = parity.make_model(args, "teacher", 1, seeds=[0])
    opt = parity.Optimizer(model.parameters(), args.teacher_optim, [args.teacher_lr], args.beta_pair)
    gen = parity.generator(args.device, 0, 1)
    xs, ys = parity.sample(gen, (args.bench_steps, 1, args.teacher_batch), args.n, args.support)
    x_buf, y_buf, loss = xs[0].clone(), ys[0].clone(), torch.zeros(1, device=device)
    run = parity.compile_step(parity.teacher_step(model, opt, x_buf, y_buf, loss),
                       list(model.parameters()) + opt.tensors() + [loss], args)
    rate = time_steps(run, lambda i: (x_buf.copy_(xs[i]), y_buf.copy_(ys[i])), args, sync)
    f = 3 * flops_per_sample(args, "teacher") * args.teacher_batch
    print(f"teacher step: {rate * args.teacher_batch:,.0f} samples/s, {rate:,.0f} steps/s, "
          f"{rate * f / 1e9:.1f} GFLOP/s ({100 * rate * f / 1e9 / peak:.1f}% of peak)")
    common.check_finite(loss.item(), "benchmark teacher loss")

    # Students: the four methods x lrs x seeds of a run, in the steady state of progressive
    # distillation: two teacher rows (the current progressive checkpoint and the final one).
    specs = parity.student_specs(args, ["ce", "oneshot", "progressive", "two_shot"], {"two_shot": 0})
    S, nS = len(specs), len(args.seed_list)
    students = parity.make_model(args, "student", S, seeds=[sp["seed"] for sp in specs])
    sopt = parity.Optimizer(students.parameters(), args.optim, [sp["lr"] for sp in specs], args.beta_pair)
    slots = parity.TeacherSlots(args, specs, [])
    slots.model.reset([torch.Generator().manual_seed(i) for i in range(len(slots.methods))])
    slots.active = 2
    slots.row_of_student.copy_(torch.tensor([int(sp["method"] == "progressive") for sp in specs]))
    xs, ys = parity.sample(gen, (args.bench_steps, nS, args.batch), args.n, args.support)
    x_buf, y_buf, loss = xs[0].clone(), ys[0].clone(), torch.zeros(S, device=device)
    run = parity.compile_step(parity.student_step(args, specs, students, sopt, slots, x_buf, y_buf, loss),
                       list(students.parameters()) + sopt.tensors() + [loss], args)
    rate = time_steps(run, lambda i: (x_buf.copy_(xs[i]), y_buf.copy_(ys[i])), args, sync)
    f_student = 3 * flops_per_sample(args, "student") * S * args.batch
    f_teacher = flops_per_sample(args, "teacher") * 2 * nS * args.batch
    print(f"student step ({S} students = 4 methods x {len(args.lrs)} lrs x {nS} seeds; 2 teacher rows): "
          f"{rate * S * args.batch:,.0f} student samples/s, {rate:,.0f} steps/s, "
          f"{rate * (f_student + f_teacher) / 1e9:.1f} GFLOP/s "
          f"({100 * rate * (f_student + f_teacher) / 1e9 / peak:.1f}% of peak; "
          f"teacher forward = {100 * f_teacher / (f_student + f_teacher):.0f}% of the FLOPs)")
    common.check_finite(loss.sum().item(), "benchmark student loss")


def time_steps(run, feed, args, sync):
    for i in range(min(5, args.bench_steps)):
        feed(i)
        run()
    sync()
    t0 = time.time()
    for i in range(args.bench_steps):
        feed(i)
        run()
    sync()
    return args.bench_steps / (time.time() - t0)


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(args.teacher_seed)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    bench(args)


if __name__ == "__main__":
    main()
