"""Tiny helpers shared by parity.py, pcfg.py and lm_pretrain.py: flags, devices, atomic files, the
distillation loss and schedule, lr schedules, small statistics and plots. Everything that belongs to
one experiment stays in its script. Importing this file changes nothing in the caller's process."""
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------------
# Flags and presets

def parse_with_presets(parser, preset_for, argv=None):
    """Parse `argv` twice: first the flags that choose a preset (e.g. --preset, --arch), then with
    preset_for(first_args) as defaults, so that any flag given explicitly wins over the preset.
    --help is held back from the first pass so that it shows the chosen preset's values."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first, _ = parser.parse_known_args([a for a in argv if a not in ("-h", "--help")])
    preset = preset_for(first)
    unknown = set(preset) - {a.dest for a in parser._actions}
    assert not unknown, f"preset sets unknown flags {sorted(unknown)}"
    parser.set_defaults(**preset)
    return parser.parse_args(argv)


def fail(flag, message):
    """Stop on bad input: name the flag and what is allowed; exit 2 (as argparse), write nothing."""
    print(f"error: {flag}: {message}", file=sys.stderr)
    sys.exit(2)


def parse_list(text, kind, flag):
    """'0,1,2' -> [0, 1, 2]; a clear error naming `flag` otherwise (floats must be finite)."""
    try:
        values = [kind(v) for v in str(text).split(",") if v.strip() != ""]
    except ValueError:
        fail(flag, f"expected a comma-separated list of {kind.__name__}, got {text!r}")
    if not values:
        fail(flag, "expected at least one value")
    if kind is float and not all(math.isfinite(v) for v in values):
        fail(flag, f"every value must be a finite number (no nan or inf), got {text!r}")
    return values


def check_finite_flags(args):
    """nan or inf in a float flag stops at parse time (exit 2), not after training (exit 3)."""
    for name, value in sorted(vars(args).items()):
        if isinstance(value, float) and not math.isfinite(value):
            fail(f"--{name}", f"must be a finite number (no nan or inf), got {value}")


def check_positive(args, names):
    """Counts must be at least 1 and rates above 0; otherwise exit 2 naming the flag."""
    for name in names:
        value = getattr(args, name)
        if isinstance(value, int) and value < 1:
            fail(f"--{name}", f"must be at least 1, got {value}")
        if not value > 0:
            fail(f"--{name}", f"must be positive, got {value}")


def check_range(args, intervals):
    """{flag: "[0, 1)"}: each value must lie in its interval ([ ]: closed ends, ( ): open)."""
    for name, interval in intervals.items():
        value = getattr(args, name)
        lo, hi = (float(x) for x in interval[1:-1].split(","))
        if not ((lo < value if interval[0] == "(" else lo <= value) and
                (value < hi if interval[-1] == ")" else value <= hi)):
            fail(f"--{name}", f"must be in {interval}, got {value}")


def check_run_flags(args, eval_every_default):
    """The flags every script shares: --ckpt (a step or auto), --save_every (default: a number of
    evaluations, a multiple of --eval_every), the test aid --halt_at (teacher:N or students:N)."""
    if args.ckpt != "auto" and not args.ckpt.isdigit():
        fail("--ckpt", f"expected a checkpoint step or 'auto', got {args.ckpt!r}")
    if args.save_every is None:
        args.save_every = eval_every_default * args.eval_every
    if args.save_every < 1 or args.save_every % args.eval_every:
        fail("--save_every", f"must be a positive multiple of --eval_every ({args.eval_every})")
    if args.halt_at is not None:
        part, _, step = args.halt_at.partition(":")
        if part not in ("teacher", "students") or not step.isdigit():
            fail("--halt_at", "expected teacher:N or students:N")


def check_lr_seeds_betas(args):
    """The optimiser flags every script shares: --lr (replaces --lr_grid), --seeds, --betas."""
    if args.lr is not None:
        if not args.lr > 0:
            fail("--lr", f"must be positive, got {args.lr}")
        args.lr_grid = str(args.lr)
    args.lrs = parse_list(args.lr_grid, float, "--lr_grid")
    if any(not lr > 0 for lr in args.lrs):
        fail("--lr_grid", f"learning rates must be positive, got {args.lr_grid}")
    args.seed_list = parse_list(args.seeds, int, "--seeds")
    if len(set(args.seed_list)) != len(args.seed_list):
        fail("--seeds", f"seeds must be distinct, got {args.seeds}")
    args.beta_pair = tuple(parse_list(args.betas, float, "--betas"))
    if len(args.beta_pair) != 2 or not all(0 <= b < 1 for b in args.beta_pair):
        fail("--betas", f"expected two numbers in [0, 1), got {args.betas}")


def pick_device(name):
    """'auto' picks cuda, then mps, then cpu; anything else must be a valid torch device."""
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if name == "auto":
        return torch.device(next((d for d, ok in available.items() if ok()), "cpu"))
    try:
        device = torch.device(name)
    except RuntimeError:
        fail("--device", f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if not available.get(device.type, lambda: True)():
        fail("--device", f"{device.type} was asked for but is not available here")
    return device


# --------------------------------------------------------------------------------------------------
# Files: atomic writes, checkpoints, JSON lines

def _atomic(path, write):
    """Write a temp file in the same folder, then rename: a killed run never leaves half a file."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save_checkpoint(obj, path):
    _atomic(path, lambda f: torch.save(obj, f))


def load_checkpoint(path, device="cpu", flag="--resume"):
    """A file written by save_checkpoint. A truncated or unreadable one (a full disk, a copy cut
    short) stops the run with exit status 2, naming the file and what to do, not a traceback."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # RuntimeError, EOFError, pickle errors: whatever a damaged file raises
        fail(flag, f"{path} cannot be read ({type(e).__name__}); delete it to recompute that part, "
                   "or point to an intact run")


def saved_steps(folder):
    """The steps of the step_*.pt checkpoints in a folder (none if there is no folder), in order."""
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sorted(int(f[5:-3]) for f in names if f.startswith("step_") and f.endswith(".pt"))


def write_json(obj, path):
    _atomic(path, lambda f: f.write((json.dumps(obj, indent=1) + "\n").encode()))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def append_jsonl(path, record):
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def rewrite_jsonl(path, records):
    """Replace a metrics file (on --resume: drops records written after the last checkpoint)."""
    _atomic(path, lambda f: f.write("".join(json.dumps(r) + "\n" for r in records).encode()))


def prepare_run_dir(out, config, resume, ignore=("resume", "device", "out")):
    """Create `out` and write config.json. An existing run is only continued with --resume, and only
    with the same settings, so nothing is overwritten by accident."""
    cfg_path = os.path.join(out, "config.json")
    if os.path.exists(out) and not os.path.isdir(out):
        fail("--out", f"{out} is a file, not a folder; choose another --out")
    if os.path.exists(cfg_path):
        if not resume:
            fail("--out", f"{out} already holds a run; pass --resume to continue it, or choose "
                          "another --out")
        old = read_json(cfg_path)
        diff = sorted(k for k in set(old) | set(config)
                      if k not in ignore and old.get(k) != config.get(k))
        if diff:
            fail("--resume", f"{out} was made with other settings: " +
                 ", ".join(f"--{k} {old.get(k)!r} (now {config.get(k)!r})" for k in diff))
    elif os.path.isdir(out) and os.listdir(out) and not resume:
        fail("--out", f"{out} is not empty and holds no config.json; choose another --out")
    os.makedirs(os.path.join(out, "ckpt"), exist_ok=True)
    write_json(config, cfg_path)


# --------------------------------------------------------------------------------------------------
# Losses and schedules

def distill_targets(teacher_logits, temperature):
    """softmax(teacher_logits / temperature), Sec. 2 eq. (KD). Subtracting the max first keeps tiny
    temperatures finite: at 1e-20 (the official MLP and PCFG code) this is one-hot on the argmax."""
    t = teacher_logits.float()
    return torch.softmax((t - t.amax(-1, keepdim=True)) / temperature, dim=-1)


def soft_cross_entropy(logits, targets):
    """-sum_c q_c log softmax(s)_c per row. With q = softmax(t / tau) this is KL(q || p_s) + H(q):
    the official code's distillation loss (no tau on the student, no tau^2 factor)."""
    return -(targets * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def progressive_ckpt(t, saved, speed, refresh):
    """Progressive distillation's teacher at student step t (Sec. 2; the official rule without its
    lookup bugs): the latest saved checkpoint <= speed x (t // refresh + 1) x refresh. It changes
    every `refresh` student steps, runs `speed` times faster, and is one refresh ahead."""
    return max(s for s in saved if s <= speed * (t // refresh + 1) * refresh)


def lr_factor(step, total, schedule, warmup=0.0, floor=0.0):
    """Multiplier of the base learning rate at `step` of `total`: linear warmup over a fraction
    `warmup` of the optimizer steps, then 'constant' or 'cosine' decay to `floor` x lr."""
    warm = int(round(warmup * total))
    if step < warm:
        return (step + 1) / warm
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warm) / max(1, total - warm))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def split_checks(values):
    """results.json keeps the pass/fail checks (booleans) apart from the numbers they read."""
    return ({k: v for k, v in values.items() if isinstance(v, bool)},
            {k: v for k, v in values.items() if not isinstance(v, bool)})


def check_finite(value, what):
    """A NaN or inf stops the run with a message instead of silently training on garbage."""
    if not math.isfinite(value):
        print(f"error: {what} is {value}; stopping. Lower the learning rate or check the inputs.",
              file=sys.stderr)
        sys.exit(3)


# --------------------------------------------------------------------------------------------------
# Small statistics, tables and plots

def steps_to(steps, accs, threshold):
    """First logged step at which accuracy reaches `threshold`, or None."""
    for s, a in zip(steps, accs):
        if a >= threshold:
            return s
    return None


def mean_std(values):
    values = [float(v) for v in values]
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def format_table(headers, rows):
    cols = [[str(h)] + [str(r[i]) for r in rows] for i, h in enumerate(headers)]
    widths = [max(len(c) for c in col) for col in cols]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(headers), line("-" * w for w in widths)] + [line(r) for r in rows])


def plt():
    """matplotlib's pyplot with a file-only backend (no display on servers or in CI)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot
    return pyplot


def plot_band(ax, x, ys, label, color=None, style="-"):
    """Mean over seeds as a line, min..max over seeds as a shaded band (paper Fig. 1)."""
    t = torch.tensor(ys, dtype=torch.float64).reshape(len(ys), -1)
    mean = t.mean(0)
    line, = ax.plot(x, mean, style, label=label, color=color)
    if t.shape[0] > 1:
        lo, hi = t.min(0).values, t.max(0).values
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    return line
