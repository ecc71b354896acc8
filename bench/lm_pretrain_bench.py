"""Throughput of lm_pretrain.py: training tokens/s (per process and in total) and the teacher's cost per student
step (a distillation step against a CE step).

    python bench/lm_pretrain_bench.py --data tests/data/pride_and_prejudice_ch01-12.txt
    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 bench/lm_pretrain_bench.py --data my_texts/
    python bench/lm_pretrain_bench.py --preset paper --device cuda --bench_steps 20 --data /path/to/corpus/

Flags are lm_pretrain.py's (the preset's sizes), plus --bench_steps. The steps timed are lm_pretrain.py's own.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lm_pretrain as lm  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    bench_steps = 20
    if "--bench_steps" in argv:  # ours; every other flag is lm_pretrain.py's, checked by it
        i = argv.index("--bench_steps")
        bench_steps = common.parse_list(argv[i + 1], int, "--bench_steps")[0]
        argv = argv[:i] + argv[i + 2:]
    args = lm.parse_args(argv)
    args.bench_steps = bench_steps
    common.check_positive(args, ["bench_steps"])
    return args


def bench(args, data, rank):
    sync = (lambda: torch.cuda.synchronize()) if "cuda" in args.device else (lambda: None)
    tokens = args.batch * args.seq_len

    def timed(fn):
        fn(0)
        sync()
        lm.barrier(args)
        t0 = time.time()
        for i in range(1, args.bench_steps + 1):
            fn(i)
        sync()
        return (time.time() - t0) / args.bench_steps

    out, lr, fresh = {}, args.teacher_lr, os.path.join(args.out, "no-state.pt")  # nothing to resume
    for role in ("teacher", "student"):
        ddp, opt, _ = lm.start_run(args, lm.make_model(args, role, 0), lr, fresh)
        out[role] = timed(lambda i: lm.train_step(args, ddp, opt, lr, data, i, 0, rank))
    ddp, opt, _ = lm.start_run(args, lm.make_model(args, "student", 1), lr, fresh)
    teacher = lm.make_model(args, "teacher", 0).eval()
    out["distill"] = timed(lambda i: lm.train_step(args, ddp, opt, lr, data, i, 0, rank, teacher))
    if rank == 0:
        print(f"device {args.device}, {args.world} process(es), global batch {args.batch} x {args.seq_len} tokens, "
              f"micro-batch {args.micro_batch}, {torch.get_num_threads()} thread(s) per process")
        for role in ("teacher", "student"):
            print(f"{role} CE step: {out[role] * 1e3:.1f} ms, {tokens / out[role]:,.0f} training tokens/s in total, "
                  f"{tokens / out[role] / args.world:,.0f} per process")
        print(f"distillation step: {out['distill'] * 1e3:.1f} ms ({tokens / out['distill']:,.0f} tokens/s); "
              f"the teacher's forward adds {(out['distill'] - out['student']) * 1e3:.1f} ms per student step "
              f"({out['distill'] / out['student']:.2f}x a CE student step)")
    return out


def main(argv=None):
    args = parse_args(argv)
    rank, data = lm.setup(args)
    out = bench(args, data, rank)
    if args.world > 1:
        torch.distributed.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
