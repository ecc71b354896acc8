"""Wider learns faster (paper Sec. 3, Fig. 2): parity.py's teachers alone, the steps to 95% against width.

    python docs/parity_sweep.py                                # MLP teachers of width 250..4000 on (50, 5), 3 seeds
    python docs/parity_sweep.py --arch transformer             # Transformer teachers of 1..16 heads
    python docs/parity_sweep.py --sweep 500,2000 --sweep_steps 10000 --out out/parity/my-sweep

A study of the teachers, not of distillation, so it lives beside parity.py and reuses its pieces: the flags and
presets (the task, the teacher's optimizer), the stacked models, the step loop and the evaluation. Added: --sweep,
the teacher widths (MLP) or head counts (Transformer), and --sweep_steps, each model's step budget. Each size
trains one teacher per seed, the seeds stacked. Writes results.json (key "sweep"), sweep.png and the table into
--out (default out/parity/<preset>-<arch>-sweep); --resume skips the sizes already in sweep.json.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import parity  # noqa: E402  (first: it pins MKL before torch loads)
import common  # noqa: E402

SWEEPS = {  # (--sweep, --sweep_steps) per parity.py preset
    ("paper", "mlp"): ("1000,5000,10000,50000", 20_000_000),
    ("paper", "transformer"): ("4,8,16,32", 250_000),
    ("cpu", "mlp"): ("250,500,1000,2000,4000", 30_000),
    ("cpu", "transformer"): ("1,2,4,8,16", 4_000),
    ("smoke", "mlp"): ("64,256", 400),
    ("smoke", "transformer"): ("1,2", 40),
}


def parse_args(argv=None):
    p = parity.build_parser()
    p.description = __doc__.split("\n\n")[0]
    p.add_argument("--sweep", type=str, help="teacher widths (MLP) or head counts (Transformer)")
    p.add_argument("--sweep_steps", type=int, help="step budget per model")

    def preset_for(f):
        sweep, steps = SWEEPS[(f.preset, f.arch)]
        return {**parity.PRESETS[(f.preset, f.arch)], "sweep": sweep, "sweep_steps": steps}

    args = common.parse_with_presets(p, preset_for, argv)
    args.mode = "sweep"  # not one of parity.py's modes: it names the default --out and sits in config.json
    common.check_positive(args, ["sweep_steps"])
    args.sweep = common.parse_list(args.sweep, int, "--sweep")
    if min(args.sweep) < 1:
        common.fail("--sweep", f"sizes must be at least 1, got {args.sweep}")
    parity.validate(args)
    return args


def run_sweep(args, heldout):
    """The steps to 95% of a teacher of each size, one per seed, stacked. Each finished size is saved to
    sweep.json, so that --resume starts at the next one."""
    path, S = os.path.join(args.out, "sweep.json"), len(args.seed_list)
    kind = "width" if args.arch == "mlp" else "heads"
    done = common.read_json(path) if os.path.exists(path) else {}
    sched = (args.teacher_schedule, args.teacher_warmup, args.teacher_floor)
    for size in [s for s in args.sweep if str(s) not in done]:
        sized = argparse.Namespace(**{**vars(args), f"teacher_{kind}": size})
        models = [parity.make_model(sized, "teacher", s) for s in args.seed_list]
        model, params = models[0], parity.stack(models, args)  # one teacher per seed, stacked
        opt = parity.Optimizer(params.values(), args.teacher_optim, [args.teacher_lr] * S,
                               args.beta_pair)
        gens = [parity.generator(args.device, s, 1) for s in args.seed_list]
        specs = [{"method": "ce", "seed": s} for s in args.seed_list]  # on labels
        step = parity.stacked_step(args, specs, model, params, opt, None)
        blocks = parity.train_blocks(args, "sweep", 0, args.sweep_steps, sched, opt, gens,
                                     args.teacher_batch, step)
        forward = lambda x: parity.run_stacked(model, params, x.expand(S, -1, -1))
        reached = [None] * S
        for step_no, _ in blocks:
            model.eval()
            acc, _ = parity.evaluate(forward, *heldout)
            model.train()
            reached = [step_no if r is None and a >= 0.95 else r for r, a in zip(reached, acc)]
            if None not in reached:
                break
        done[str(size)] = reached
        common.write_json(done, path)
    return {"sizes": args.sweep, "kind": kind, "budget": args.sweep_steps,
            "steps_to_0.95": [done[str(s)] for s in args.sweep]}


def make_figure(results, out):
    """Paper Fig. 2: mean steps to 95% over seeds, min..max as error bars; unreached counts as the budget."""
    sw, cfg = results["sweep"], results["config"]
    rows = [[sw["budget"] if v is None else v for v in row] for row in sw["steps_to_0.95"]]
    means = [sum(r) / len(r) for r in rows]
    fig, ax = common.plt().subplots(figsize=(5, 4))
    ax.errorbar(sw["sizes"], means, yerr=[[m - min(r) for m, r in zip(means, rows)],
                                          [max(r) - m for m, r in zip(means, rows)]], fmt="o-", capsize=3)
    ax.axhline(sw["budget"], color="gray", ls=":", lw=1, label="budget (not reached)")
    ax.set(xscale="log", yscale="log", xlabel=f"teacher {sw['kind']}", ylabel="steps to 95%",
           title=f"{cfg['arch'].upper()} on ({cfg['n']},{cfg['k']})-sparse parity")
    ax.legend(fontsize=8)
    parity.save(fig, out, "sweep.png")


def main(argv=None):
    args = parse_args(argv)
    heldout, t_start = parity.start_run(args), time.time()
    results = {"config": parity.config_of(args), "sweep": run_sweep(args, heldout)}
    results["checks"], results["measured"] = {}, {}  # the keys of every parity.py run; the sweep checks nothing
    common.write_json(results, os.path.join(args.out, "results.json"))
    sw = results["sweep"]
    rows = [[size, parity.fmt_steps(row, sw["budget"])] for size, row in zip(sw["sizes"], sw["steps_to_0.95"])]
    print("\n" + common.format_table([f"teacher {sw['kind']}", "steps to 95%"], rows))
    make_figure(results, args.out)
    print(f"\nwrote results.json and sweep.png to {args.out}/ in {time.time() - t_start:.0f}s")
    return results


if __name__ == "__main__":
    main()
