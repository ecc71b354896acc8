"""Throughput of pcfg.py: sampler sentences/s and training tokens/s of teacher and student steps. The side-by-side
comparisons with nltk and transformers.BertForMaskedLM are in bench/references.py (not dependencies).

    python bench/pcfg_bench.py                                     # the cpu mlm preset
    python bench/pcfg_bench.py --preset paper --device cuda --bench_steps 50

Flags are pcfg.py's (the preset's sizes), plus --bench_steps. The steps timed are pcfg.py's own.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import pcfg  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402
import torch  # noqa: E402


def parse_args(argv=None):
    parser = pcfg.build_parser()
    parser.add_argument("--bench_steps", type=int, default=20, help="steps timed")
    args = common.parse_with_presets(parser, lambda f: pcfg.PRESETS[(f.preset, f.objective)], argv)
    args.teacher_lr_given = True  # a bench times steps: the refusal of levels 1-2 at the cpu lr is about results
    pcfg.validate(args)
    common.check_positive(args, ["bench_steps"])
    return args


def bench_sampler(args, seconds=2.0):
    """Sentences/s of our batched sampler, ancestors and span ends included."""
    g = pcfg.grammar(args.grammar)
    n, t0 = 0, time.time()
    while time.time() - t0 < seconds:
        s = pcfg.sample_sentences(g, 1000, pcfg.rng_for(0, 9, n))
        n += 1000
    rate = n / (time.time() - t0)
    print(f"sampler ({args.grammar}, with ancestors and span ends): {rate:,.0f} sentences/s "
          f"({rate * len(s['tokens']) / 1000 / 1e6:.1f}M tokens/s)")
    return rate


def bench_batches(args, stream):
    batches = [pcfg.batch_for(args, 0, stream, i, args.level_list[0]) for i in range(args.bench_steps + 3)]
    return batches, sum(int((b[0] != pcfg.PAD).sum()) for b in batches) / len(batches)


def bench(args):
    torch.manual_seed(0)
    bench_sampler(args)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    data = {role: bench_batches(args, stream) for role, stream in (("teacher", 1), ("student", 2))}
    for role, (batches, tokens_per) in data.items():  # each at its own batch (--teacher_batch, --batch)
        model = pcfg.make_model(args, role, 0)
        opt = pcfg.make_optimizer(model, 1e-3, args)
        rate = time_train(lambda b: pcfg.train_step(model, opt, 1e-3, *b, clip=args.clip), batches, sync)
        print(f"{role} train step ({args.objective}, batch {batches[0][0].shape[0]} x {batches[0][0].shape[1]}): "
              f"{rate * tokens_per:,.0f} tokens/s, {rate:.1f} steps/s")
        if role == "teacher":
            with torch.no_grad():
                model.eval()
                student_batches, student_tokens = data["student"]
                fwd = time_train(lambda b: model(b[0], b[1]), student_batches, sync)
            print(f"teacher forward on student batches (distillation targets): {fwd * student_tokens:,.0f} tokens/s")


def time_train(step, batches, sync):
    for b in batches[:3]:
        step(b)
    sync()
    t0 = time.time()
    for b in batches[3:]:
        step(b)
    sync()
    return (len(batches) - 3) / (time.time() - t0)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    bench(args)


if __name__ == "__main__":
    main()
