"""(n, k)-sparse parity: progressive distillation against one-shot distillation and CE (Sec. 3).

A wide teacher learns sparse parity through a phase transition. A narrow student learns it far
faster from the teacher's intermediate checkpoints (progressive distillation) than from the final
teacher (one-shot) or from labels (CE): checkpoints inside the transition correlate with low-degree
monomials of the support, an implicit curriculum. For an MLP or a small GPT-style Transformer this
regenerates Fig. 1 left / middle and Fig. 3 (docs/parity_sweep.py: Fig. 2).

Sections 1-5 are the mechanism, written for one model: data, models, the teacher's training loop,
the distillation schedule, a student's loss and step. Section 6 is the engine: every student of a
run (methods x lrs x seeds) trains as one stack of the same modules through the same loss. Then the
study: the probe (7), curriculum extraction (8, beyond the paper), results (9) and main (10).

    python parity.py                                  # the whole CPU MLP study
    python parity.py --arch transformer               # the same with Transformers
    python parity.py --preset paper --device cuda     # the paper's settings (GPU)
    python parity.py --mode progressive --lr 5e-3 --teacher_dir out/parity/cpu-mlp-all

To copy: this file plus common.py; needs torch and matplotlib.
"""
import argparse
import itertools
import math
import os
import random
import sys
import time
from functools import lru_cache

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")  # before torch: same seed, same numbers on CPU
import common
import torch
import torch.nn as nn
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------------
# 0. Config: presets (a flag given on the command line overrides them), flags, and their checks.

PAPER_GRID = "1e-2,7.5e-3,5e-3,2.5e-3,1e-3"
ADAM_CONSTANT_LR = dict(teacher_optim="adam", optim="adam", teacher_schedule="constant", warmup=0.0,
                        teacher_warmup=0.0, teacher_floor=0.0, schedule="constant", floor=0.0)
# extract_steps: 500 measured on the cpu MLP (section 8); paper, cpu Transformer: T / 10, unmeasured
PRESETS = {
    ("paper", "mlp"): dict(  # the paper's settings (Sec. 3, Fig. 1; the official code), for a GPU
        n=100, k=6, teacher_width=50_000, student_width=100, teacher_optim="sgd", teacher_lr=0.01,
        teacher_batch=1, teacher_steps=20_000_000, teacher_schedule="cosine", teacher_warmup=0.0,
        teacher_floor=0.1, optim="sgd", lr_grid="1e-2,5e-3,1e-3", batch=1, steps=20_000_000,
        schedule="cosine", warmup=0.0, floor=0.1, T=1_000_000, ckpt_every=100_000,
        eval_every=20_000, extract_steps=100_000, temperature=1e-20, betas="0.9,0.999"),
    ("paper", "transformer"): dict(
        n=100, k=6, layers=2, head_dim=8, teacher_heads=32, student_heads=4, dropout=0.1,
        teacher_optim="adam", teacher_lr=3e-4, teacher_batch=32, teacher_steps=250_000,
        teacher_schedule="cosine", teacher_warmup=0.06, teacher_floor=0.0, betas="0.9,0.999",
        optim="adam", lr_grid="1e-4", batch=32, steps=250_000, schedule="cosine", warmup=0.06,
        floor=0.0, ckpt_every=3125, eval_every=625, T=31_250, extract_steps=3125, temperature=1.0),
    ("cpu", "mlp"): dict(  # shows the claim on 2 CPU cores in minutes (docs/parity.md, "Presets")
        n=50, k=5, teacher_width=2000, student_width=20, teacher_lr=1e-3, teacher_batch=32,
        teacher_steps=10_000, lr_grid=PAPER_GRID, batch=32, steps=30_000, **ADAM_CONSTANT_LR,
        ckpt_every=100, eval_every=100, T=5_000, extract_steps=500, temperature=1e-20),
    ("cpu", "transformer"): dict(  # tuned on seeds 0-5, confirmed on unseen seeds (docs/parity.md)
        n=20, k=3, layers=2, head_dim=8, teacher_heads=16, student_heads=1, student_head_dim=6,
        teacher_lr=1e-2, teacher_batch=32, teacher_steps=800, lr_grid="1.25e-3", batch=32,
        steps=5_000, **ADAM_CONSTANT_LR, ckpt_every=50, eval_every=50, T=1_000, ckpt="150",
        extract_steps=100, temperature=1.0, probe_samples=20_000,
        speed=0.125),  # at lr 1.25e-3 labels fail; at speed 1 it cannot follow the transition
    ("smoke", "mlp"): dict(  # seconds, for tests
        n=12, k=3, teacher_width=256, student_width=16, teacher_lr=3e-3, teacher_batch=32,
        teacher_steps=400, lr_grid="1e-2,3e-3", batch=32, steps=400, **ADAM_CONSTANT_LR,
        extract_steps=50, ckpt_every=50, eval_every=50, T=100, temperature=1e-20,
        probe_samples=20_000, probe_off=20, eval_size=1024),
    ("smoke", "transformer"): dict(
        n=8, k=2, layers=1, head_dim=4, teacher_heads=4, student_heads=1, teacher_lr=3e-3,
        teacher_batch=16, teacher_steps=60, lr_grid="3e-3", batch=16, steps=60, **ADAM_CONSTANT_LR,
        T=20, ckpt_every=20, eval_every=20, extract_steps=20, temperature=1e-20,
        probe_samples=4_000, probe_off=10, eval_size=512),
}
MODES = ["all", "teacher", "probe", "ce", "oneshot", "progressive", "two_shot", "extract"]
STUDENTS = ["ce", "oneshot", "progressive", "two_shot", "two_shot_before", "two_shot_after",
            "extract"]  # --mode all's; before and after: Fig. 3 right's controls
THRESHOLDS = (0.9, 0.95)
TEACHER_STATE, STUDENTS_STATE = "ckpt/teacher_state.pt", "ckpt/students_state.pt"  # --resume
STATS_SAMPLES = 8192  # fresh samples for the statistics of extract's targets (section 8)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--mode", default="all", choices=MODES, help="what to run (module docstring)")
    a("--arch", default="mlp", choices=["mlp", "transformer"], help="Sec. 3.1")
    a("--preset", default="cpu", choices=["cpu", "paper", "smoke"], help="defaults for the flags")
    a("--n", type=int, help="input dimension n of (n,k)-sparse parity")
    a("--k", type=int, help="support size k")
    a("--random_support", type=int, default=0, choices=[0, 1], help="1: drawn from --teacher_seed")
    a("--teacher_width", type=int, help="MLP teacher hidden width")
    a("--student_width", type=int, help="MLP student hidden width")
    a("--layers", type=int, help="Transformer layers")
    a("--head_dim", type=int, help="Transformer head dimension")
    a("--teacher_heads", type=int, help="Transformer teacher heads (width = heads x head_dim)")
    a("--student_heads", type=int, help="Transformer student heads")
    a("--student_head_dim", type=int, help="Transformer student head dim (default --head_dim)")
    a("--dropout", type=float, default=0.0, help="Transformer dropout (GPT-2 default 0.1)")
    a("--teacher_optim", choices=["sgd", "adam"], help="no momentum, no weight decay")
    a("--teacher_lr", type=float, help="teacher learning rate")
    a("--teacher_batch", type=int, help="teacher batch size (fresh samples every step)")
    a("--teacher_steps", type=int, help="teacher optimizer steps")
    a("--teacher_schedule", choices=["constant", "cosine"], help="teacher lr schedule")
    a("--teacher_warmup", type=float, help="teacher linear warmup, fraction of its steps")
    a("--teacher_floor", type=float, help="cosine decays to floor x lr")
    a("--teacher_seed", type=int, default=0, help="teacher init and data seed")
    a("--ckpt_every", type=int, help="teacher checkpoint interval (steps)")
    a("--teacher_dir", type=str, default=None, help="reuse an earlier run's teacher")
    a("--optim", choices=["sgd", "adam"], help="student optimizer")
    a("--lr", type=float, default=None, help="one student learning rate (replaces --lr_grid)")
    a("--lr_grid", type=str, help="student learning rates; each method is reported at its best")
    a("--batch", type=int, help="student batch size")
    a("--steps", type=int, help="student optimizer steps")
    a("--schedule", choices=["constant", "cosine"], help="student lr schedule")
    a("--warmup", type=float, help="student linear warmup, fraction of its steps")
    a("--floor", type=float, help="cosine decays to floor x lr")
    a("--betas", type=str, default="0.9,0.95", help="Adam betas (paper preset: torch's)")
    a("--seeds", type=str, default="0,1,2", help="student seeds (the paper averages 3)")
    a("--temperature", type=float, help="teacher softmax temperature; 1e-20 = argmax targets")
    a("--speed", type=float, default=1.0, help="progressive: the teacher runs speed x faster")
    a("--refresh", type=int, help="progressive: steps per teacher change (default --ckpt_every)")
    a("--ckpt", type=str, default="auto", help="two_shot stage-1 checkpoint step, or auto (probe)")
    a("--T", type=int, help="two_shot: student steps on the stage-1 checkpoint, then the final")
    a("--extract_steps", type=int, help="extract: stage-1 steps (hidden layers)")
    a("--probe_samples", type=int, default=100_000, help="fresh samples for the monomial probe")
    a("--probe_off", type=int, default=100, help="random off-support monomials per degree")
    a("--eval_every", type=int, help="evaluation interval (steps); divides --ckpt_every")
    a("--eval_size", type=int, default=4096, help="held-out examples (paper: 4096)")
    a("--out", type=str, default=None, help="run folder (out/parity/<preset>-<arch>-<mode>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--save_every", type=int, default=None, help="student resume interval (default: 20 evals)")
    a("--device", type=str, default="auto", help="auto, cpu, cuda, cuda:N or mps")
    a("--cuda_graph", type=int, default=1, choices=[0, 1], help="students' step as a CUDA graph")
    a("--halt_at", type=str, default=None, help=argparse.SUPPRESS)  # tests: teacher:N, students:N
    return p


def parse_args(argv=None):
    args = common.parse_with_presets(build_parser(), lambda f: PRESETS[(f.preset, f.arch)], argv)
    validate(args)
    return args


def validate(args):
    """Every check that can fail runs before anything is written (exit 2, naming the flag)."""
    common.check_finite_flags(args)  # nan or inf in any float flag: first
    args.student_head_dim = args.student_head_dim or args.head_dim  # None for the MLP
    args.refresh = args.ckpt_every if args.refresh is None else args.refresh
    sizes = ["teacher_width", "student_width"] if args.arch == "mlp" else [
        "layers", "head_dim", "teacher_heads", "student_heads", "student_head_dim"]
    common.check_positive(args, ["n", "k", "teacher_batch", "teacher_steps", "batch", "steps",
                                 "ckpt_every", "eval_every", "eval_size", "probe_samples",
                                 "teacher_lr", "temperature", "speed", "refresh"] + sizes)
    own = (("T", "two_shot"), ("extract_steps", "extract"))  # checked only where used
    own_steps = {f: f"[0, {args.steps}]" for f, m in own if args.mode in ("all", m)}
    common.check_range(args, {"k": f"[1, {args.n}]", "dropout": "[0, 1)"} | own_steps)
    if args.ckpt_every % args.eval_every:
        common.fail("--eval_every", f"must divide --ckpt_every={args.ckpt_every}")
    common.check_lr_seeds_betas(args)  # sets args.lrs, args.seed_list, args.beta_pair
    common.check_run_flags(args, eval_every_default=20)
    args.device = str(common.pick_device(args.device))
    args.out = args.out or os.path.join("out", "parity", f"{args.preset}-{args.arch}-{args.mode}")
    args.support = (sorted(random.Random(args.teacher_seed).sample(range(args.n), args.k))
                    if args.random_support else list(range(args.k)))  # the paper's: the first k
    saved = range(0, args.teacher_steps + 1, args.ckpt_every)  # the teacher trained here
    if args.teacher_dir is not None:  # a finished teacher for the same task and architecture
        d, saved = args.teacher_dir, common.saved_steps(teacher_ckpt(args.teacher_dir))
        if not os.path.exists(os.path.join(d, "config.json")) or not saved:
            common.fail("--teacher_dir", f"{d}: no teacher checkpoints (config.json, ckpt/teacher)")
        cfg = common.read_json(os.path.join(d, "config.json"))
        keys = ["arch", "n", "k", "support"] + [f for f in sizes if not f.startswith("student")]
        diff = [f"{k}={cfg.get(k)!r} (here {getattr(args, k)!r})" for k in keys
                if cfg.get(k) != getattr(args, k)]
        if diff:
            common.fail("--teacher_dir", f"{d} was made for another setting: " + ", ".join(diff))
        if cfg.get("teacher_steps") not in saved:
            common.fail("--teacher_dir", f"the teacher in {d} is unfinished (no checkpoint at "
                                         f"{cfg.get('teacher_steps')}); finish it with --resume")
    if args.ckpt != "auto" and int(args.ckpt) not in saved:
        common.fail("--ckpt", f"{args.ckpt} is not a saved teacher step (see --ckpt_every)")


# --------------------------------------------------------------------------------------------------
# 1. Data: (n, k)-sparse parity (Sec. 3, Def. 3.1). x ~ Unif{-1,+1}^n, y = prod_{i in S} x_i.
# As in the paper's code, class 0 <=> parity +1 and class 1 <=> parity -1.

def parity_labels(x, support):
    return (x[..., support].prod(-1) < 0).long()


def sample(gen, shape, n, support):
    """Fresh samples on the generator's device: x (*shape, n) in {-1,+1}, labels of `shape`."""
    x = torch.randint(0, 2, (*shape, n), generator=gen, device=gen.device).float().mul_(2).sub_(1)
    return x, parity_labels(x, support)


def generator(device, seed, stream):
    """Streams: 1 teacher data, 2 student data, 3 held-out, 4 probe, 5 extract's statistics."""
    return torch.Generator(device=device).manual_seed(1000 * seed + stream)


# --------------------------------------------------------------------------------------------------
# 2. Models (Sec. 3.1), shapes for one model. The engine (section 6) runs S stacked copies through
# these same modules: each parameter gains a leading dim S, over which every op broadcasts.

class Linear(nn.Module):
    """nn.Linear with w (in, out); S stacked copies (section 6) run as one batched GEMM."""

    def __init__(self, d_in, d_out, bias=True):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(d_in, d_out))
        self.b = nn.Parameter(torch.zeros(d_out)) if bias else None

    def forward(self, x):  # (..., d_in) -> (..., d_out)
        if self.w.dim() == 2:  # one model: x @ w + b, nn.Linear's fused GEMM
            return F.linear(x, self.w.t(), self.b)
        S, rows = len(x), x.reshape(len(x), -1, x.shape[-1])  # (S, B [x T], d_in)
        w = self.w.view(S, *self.w.shape[-2:])
        if self.b is None:
            return torch.bmm(rows, w).view(*x.shape[:-1], -1)
        return torch.baddbmm(self.b.view(S, 1, -1), rows, w).view(*x.shape[:-1], -1)


class MLP(nn.Module):
    """One-hidden-layer ReLU MLP, n -> width -> 2 (Sec. 3.1)."""

    def __init__(self, n, width):
        super().__init__()
        self.fc1, self.act, self.fc2 = Linear(n, width), nn.ReLU(), Linear(width, 2)

    @torch.no_grad()
    def reset(self, gen):  # nn.Linear's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        for layer in (self.fc1, self.fc2):
            bound = 1 / math.sqrt(layer.w.shape[0])
            for p in (layer.w, layer.b):
                p.copy_(torch.rand(p.shape, generator=gen).mul_(2 * bound).sub_(bound))

    def forward(self, x):  # x: (B, n) -> logits (B, 2)
        return self.fc2(self.act(self.fc1(x)))  # the hidden layer: (B, width)


class LayerNorm(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(d)), nn.Parameter(torch.zeros(d))

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class Block(nn.Module):
    """GPT-2 block: pre-LN causal self-attention and a GELU MLP of width 4d."""

    def __init__(self, heads, head_dim, dropout):
        super().__init__()
        d, self.heads, self.dropout = heads * head_dim, heads, dropout
        self.ln1, self.attn, self.proj = LayerNorm(d), Linear(d, 3 * d), Linear(d, d)
        self.ln2, self.fc, self.out = LayerNorm(d), Linear(d, 4 * d), Linear(4 * d, d)

    def forward(self, h, last_only=False):  # h: (B, T, d); last_only: all the classifier reads
        q, k, v = self.attn(self.ln1(h)).split(h.shape[-1], dim=-1)  # (B, T, d) each
        if last_only:  # the last query sees every key, so no mask is needed
            q, h = q[..., -1:, :], h[..., -1:, :]
        p = self.dropout if self.training else 0.0
        q, k, v = self.split_heads(q), self.split_heads(k), self.split_heads(v)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=not last_only, dropout_p=p)
        a = a.transpose(1, 2).reshape(h.shape)  # (B, T, d)
        h = h + F.dropout(self.proj(a), p, self.training)
        m = self.out(F.gelu(self.fc(self.ln2(h))))
        return h + F.dropout(m, p, self.training)

    def split_heads(self, t):  # (..., T, d) -> (B, heads, T, head_dim); leading dims fold into B
        return t.reshape(-1, t.shape[-2], self.heads, t.shape[-1] // self.heads).transpose(1, 2)


class GPT(nn.Module):
    """GPT-2 on tokens (1 - x) / 2; the class: the last position's logits, as the paper's code."""

    def __init__(self, n, layers, heads, head_dim, dropout):
        super().__init__()
        d, self.dropout = heads * head_dim, dropout
        self.wte, self.wpe = Linear(2, d, bias=False), nn.Parameter(torch.zeros(n, d))
        self.blocks = nn.ModuleList(Block(heads, head_dim, dropout) for _ in range(layers))
        self.ln_f, self.head = LayerNorm(d), Linear(d, 2, bias=False)

    @torch.no_grad()
    def reset(self, gen):
        """GPT-2 init: N(0, 0.02), residual projections 1/sqrt(2 x layers) of it, zero biases."""
        big = [self.wte.w, self.wpe, self.head.w] + [b.attn.w for b in self.blocks]
        big += [b.fc.w for b in self.blocks]
        res = [b.proj.w for b in self.blocks] + [b.out.w for b in self.blocks]
        for ps, std in [(big, 0.02), (res, 0.02 / math.sqrt(2 * len(self.blocks)))]:
            for p in ps:
                p.copy_(torch.randn(p.shape, generator=gen) * std)

    def forward(self, x):  # x: (B, n) in {-1, +1} -> logits (B, 2)
        tokens = F.one_hot(((1 - x) / 2).long(), 2).float()  # (B, n, 2)
        h = self.wte(tokens) + self.wpe  # (B, n, d)
        h = F.dropout(h, self.dropout, self.training)
        for i, block in enumerate(self.blocks):
            h = block(h, last_only=i == len(self.blocks) - 1)  # the last block: (B, 1, d)
        return self.head(self.ln_f(h))[..., 0, :]


def make_model(args, role, seed=None):
    """The teacher or a student of --arch; `seed` initialises it (None: a checkpoint will)."""
    if args.arch == "mlp":
        model = MLP(args.n, args.teacher_width if role == "teacher" else args.student_width)
    else:
        heads, head_dim = ((args.teacher_heads, args.head_dim) if role == "teacher" else
                           (args.student_heads, args.student_head_dim))
        model = GPT(args.n, args.layers, heads, head_dim, args.dropout)
    if seed is not None:
        model.reset(torch.Generator().manual_seed(1000 * seed + (0 if role == "teacher" else 5)))
    return model.to(args.device)


@torch.no_grad()
def evaluate(forward, x, y, chunk=2048):
    """Accuracy and CE loss of forward (x (N, n) -> (..., N, 2)) on x, y; called in eval() mode."""
    correct, loss = 0, 0
    for i in range(0, len(x), chunk):
        logits = forward(x[i:i + chunk]).float()
        labels = y[i:i + chunk]
        correct = correct + (logits.argmax(-1) == labels).sum(-1)
        loss = loss + common.soft_cross_entropy(logits, F.one_hot(labels, 2).float()).sum(-1)
    return (correct / len(x)).tolist(), (loss / len(x)).tolist()


# --------------------------------------------------------------------------------------------------
# 3. The teacher (Sec. 3.1): a wide model on labels, trained with torch.optim, checkpointed every
# --ckpt_every steps (step 0 included) for the students (sections 4-6) and the probe (section 7).

def teacher_ckpt(run_dir, step=None):  # a run's teacher checkpoint at `step`, or their folder
    folder = os.path.join(run_dir, "ckpt", "teacher")
    return folder if step is None else os.path.join(folder, f"step_{step:09d}.pt")


@lru_cache(maxsize=8)
def load_teacher(run_dir, step, device):
    """run_dir's teacher checkpoint at `step`: a dict of "model" (a state dict), "step", "acc"."""
    return common.load_checkpoint(teacher_ckpt(run_dir, step), device)


def train_teacher(args, heldout):
    """Fresh samples every step; step 0, the untrained init, is evaluated and saved too."""
    model = make_model(args, "teacher", args.teacher_seed)
    opt = (torch.optim.SGD(model.parameters(), args.teacher_lr) if args.teacher_optim == "sgd" else
           torch.optim.Adam(model.parameters(), args.teacher_lr, args.beta_pair))  # as the paper
    gen = generator(args.device, args.teacher_seed, 1)
    state = resume(args, "teacher", TEACHER_STATE)
    if "model" in state:  # model, optimizer and data stream
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"].cpu())
    sched, losses = (args.teacher_schedule, args.teacher_warmup, args.teacher_floor), []
    for step in range(state["step"], args.teacher_steps + 1):
        last = step == args.teacher_steps
        if (step % args.eval_every == 0 or last) and (losses or step == 0):
            model.eval()
            acc, loss = evaluate(model, *heldout)
            model.train()
            record = {"role": "teacher", "step": step, "acc": acc, "loss": loss}
            if losses:  # the mean training loss since the last evaluation
                record["train_loss"] = train_loss = sum(losses).item() / len(losses)
                common.check_finite(train_loss, f"the teacher training loss at step {step}")
            common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
            if step % args.ckpt_every == 0 or last:
                ckpt = {"model": model.state_dict(), "step": step, "acc": acc}
                common.save_checkpoint(ckpt, teacher_ckpt(args.out, step))
                state = {**ckpt, "opt": opt.state_dict(), "gen": gen.get_state()}
                common.save_checkpoint(state, os.path.join(args.out, TEACHER_STATE))
            if losses and (step % (10 * args.eval_every) == 0 or last):
                print(f"teacher step {step:>9d}  acc {acc:.3f}  train loss {train_loss:.4f}",
                      flush=True)
            losses = []
        if last:
            break
        for group in opt.param_groups:
            group["lr"] = args.teacher_lr * common.lr_factor(step, args.teacher_steps, *sched)
        x, y = sample(gen, (args.teacher_batch,), args.n, args.support)  # (B, n), (B,)
        loss = F.cross_entropy(model(x), y)  # on labels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.detach())
        halt_for_tests(args, "teacher", step + 1)


def resume(args, role, state_file):
    """--resume: the saved state ({"step": 0} if none); drops `role`'s metrics logged after it."""
    state, path = {"step": 0}, os.path.join(args.out, state_file)
    if os.path.exists(path):
        state = common.load_checkpoint(path, args.device)
        print(f"{role}: resuming at step {state['step']}")
    path = os.path.join(args.out, "metrics.jsonl")
    common.rewrite_jsonl(path, [r for r in common.read_jsonl(path)
                                if r["role"] != role or r["step"] <= state["step"]])
    return state


# --------------------------------------------------------------------------------------------------
# 4. The distillation schedule (Sec. 2-3, Alg. 1): which teacher checkpoint a student learns from at
# student step t; `saved` are the teacher's checkpoint steps.

def schedule_ckpt(method, t, saved, args, stage1=None):
    if method in ("oneshot", "extract"):  # extract: stage 2 distils from the final teacher
        return saved[-1]
    if method == "progressive":  # every --refresh steps, the checkpoint --speed x further on
        return common.progressive_ckpt(t, saved, args.speed, args.refresh)
    if method.startswith("two_shot"):  # Alg. 1, (2,T): the stage-1 checkpoint for T steps
        return stage1 if t < args.T else saved[-1]
    raise ValueError(method)


# --------------------------------------------------------------------------------------------------
# 5. A student (Sec. 2): its loss on labels (CE) or against the softened outputs of the checkpoint
# that the schedule names, and one optimizer step of it.

def student_targets(y, teacher_logits, temperature):
    """softmax(teacher_logits / temperature) of the scheduled checkpoint, or the labels y (CE)."""
    if teacher_logits is None:
        return F.one_hot(y, 2).float()
    return common.distill_targets(teacher_logits, temperature)


def student_loss(logits, targets):
    """The batch's mean of -sum_c q_c log p_c; logits (B, 2) or stacked (S, B, 2)."""
    return common.soft_cross_entropy(logits, targets).mean(-1)


def student_step(student, opt, x, y, teacher, temperature):
    """One step of one student; teacher: a model holding the scheduled checkpoint, or None (CE)."""
    with torch.no_grad():
        targets = student_targets(y, None if teacher is None else teacher(x), temperature)
    loss = student_loss(student(x), targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


# --------------------------------------------------------------------------------------------------
# 6. The engine: every student of a run (methods x lrs x seeds), and the teacher checkpoints they
# read, as stacks of S copies of the section-2 modules (torch.func.functional_call), so each layer
# is one batched GEMM for all. Students with the same seed share init and batches: the method is
# the only difference. State lives in tensors: on a GPU a student step is one CUDA graph.

def stack(models, args):
    """{name: (S, 1, .., *shape)}: the parameters of S models, stacked into new leaf tensors, with
    1s up to the activations' rank, so that they broadcast over the batch in section 2's modules."""
    named = [dict(m.named_parameters()) for m in models]
    rank = 2 if args.arch == "mlp" else 3  # of one model's activations: (B, d) or (B, T, d)
    shape = lambda p: (len(models), *[1] * (rank - p.dim()), *p.shape)
    return {k: torch.stack([ps[k].detach() for ps in named]).view(shape(p)).requires_grad_()
            for k, p in named[0].items()}


def run_stacked(model, params, x):
    """model's S stacked copies in `params` on x (S, B, n) -> logits (S, B, 2)."""
    return torch.func.functional_call(model, params, (x,))


def halt_for_tests(args, role, step):  # --halt_at role:step dies as a killed job would
    if args.halt_at == f"{role}:{step}":
        print(f"halting at {role} step {step} (--halt_at)", flush=True)
        os._exit(1)


class Optimizer:
    """SGD or Adam over stacked parameters, one lr per model; state in tensors (a CUDA graph)."""

    def __init__(self, params, kind, lrs, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.kind, self.betas, self.eps = list(params), kind, betas, eps
        self.lr = torch.tensor(lrs, dtype=torch.float32, device=self.params[0].device)
        self.factor = torch.ones((), device=self.lr.device)  # the lr schedule, set before each step
        self.t = torch.zeros((), device=self.lr.device)
        self.m = [torch.zeros_like(p) for p in self.params] if kind == "adam" else []
        self.v = [torch.zeros_like(m) for m in self.m]

    @torch.no_grad()
    def step(self):
        self.t += 1
        b1, b2 = self.betas
        for i, p in enumerate(self.params):
            lr = (self.lr * self.factor).view(-1, *[1] * (p.dim() - 1))
            if self.kind == "sgd":
                p.sub_(lr * p.grad)
            else:  # torch.optim.Adam's formula; it takes sqrt(v) / sqrt(1 - b2^t): other last bits
                self.m[i].lerp_(p.grad, 1 - b1)
                self.v[i].mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                denom = (self.v[i] / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
                p.sub_(lr * self.m[i] / (1 - b1 ** self.t) / denom)
            p.grad = None  # zero_grad: the next backward starts afresh

    def tensors(self):  # the whole state: saved for --resume, restored after a graph's warm-up
        return [self.t] + self.m + self.v


def compile_step(step, state_tensors, args):
    """On CUDA, capture one train step as a CUDA graph and return its replay (small steps are bound
    by kernel launches). Warm-up steps are undone, so results do not depend on the capture."""
    if not (args.cuda_graph and args.device.startswith("cuda")):
        return step
    backup = [t.detach().clone() for t in state_tensors]
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                step()
        torch.cuda.current_stream().wait_stream(stream)
        with torch.cuda.graph(graph := torch.cuda.CUDAGraph()):
            step()
        run = graph.replay
    except RuntimeError as e:  # an op that cannot be captured: stay correct, just slower
        print(f"warning: CUDA graph capture failed ({e}); running eagerly", file=sys.stderr)
        torch.cuda.synchronize()
        run = step
    with torch.no_grad():
        for t, b in zip(state_tensors, backup):
            t.copy_(b)
    return run


def train_blocks(args, role, start, total, sched, opt, gens, batch, step, refresh=lambda t: None):
    """Steps start..total of step(x_buf, y_buf) (row j of the batch from gens[j]; a CUDA graph where
    it can); yields (step, mean train loss per model) every --eval_every steps."""
    x_buf = torch.zeros(len(gens), batch, args.n, device=args.device)  # static, for a graph
    y_buf = torch.zeros(len(gens), batch, dtype=torch.long, device=args.device)
    loss_sum = torch.zeros(len(opt.lr), device=args.device)
    run_step = compile_step(lambda: loss_sum.add_(step(x_buf, y_buf)),
                            opt.params + opt.tensors() + [loss_sum], args)
    for s0 in range(start, total, args.eval_every):
        n_steps = min(args.eval_every, total - s0)
        draws = [sample(g, (n_steps, batch), args.n, args.support) for g in gens]
        xs, ys = torch.stack([x for x, _ in draws]), torch.stack([y for _, y in draws])
        loss_sum.zero_()
        for i in range(n_steps):
            refresh(s0 + i)  # the teachers of step s0 + i (TeacherSlots)
            opt.factor.fill_(common.lr_factor(s0 + i, total, *sched))
            x_buf.copy_(xs[:, i])
            y_buf.copy_(ys[:, i])
            run_step()
            halt_for_tests(args, role, s0 + i + 1)
        losses = (loss_sum / n_steps).cpu().tolist()
        common.check_finite(sum(losses), f"the {role} training loss at step {s0 + n_steps}")
        yield s0 + n_steps, losses


class TeacherSlots:
    """The checkpoints that the students need now, stacked for one forward; a row per checkpoint."""

    def __init__(self, args, specs, saved):
        self.args, self.run_dir, self.saved = args, args.teacher_dir or args.out, saved
        self.stage1 = {sp["method"]: sp["stage1"] for sp in specs if sp["method"] != "ce"}
        shared = {"oneshot", "extract"} <= set(self.stage1)  # both want the final teacher
        self.size = len(self.stage1) - shared  # the most checkpoints wanted at once
        self.student_method = [sp["method"] for sp in specs]
        self.model = make_model(args, "teacher").eval()
        self.params = stack([self.model] * self.size, args)
        self.rows = []  # the checkpoint step held by each row in use
        self.graph = args.cuda_graph and args.device.startswith("cuda")  # a graph: fixed shapes
        self.row_of_student = torch.zeros(len(specs), dtype=torch.long, device=args.device)

    def refresh(self, t):
        want = {m: schedule_ckpt(m, t, self.saved, self.args, s) for m, s in self.stage1.items()}
        rows = sorted(set(want.values()))
        if rows == self.rows:
            return
        for i, step in enumerate(rows):
            if i >= len(self.rows) or self.rows[i] != step:
                state = load_teacher(self.run_dir, step, self.args.device)["model"]
                with torch.no_grad():
                    for k, p in self.params.items():
                        p[i].copy_(state[k].view(p[i].shape))
        self.rows = rows
        row = [rows.index(want[m]) if m in want else 0 for m in self.student_method]
        self.row_of_student.copy_(torch.tensor(row))

    @torch.no_grad()
    def logits(self, x):
        """x (N, n) -> the logits of the rows in use (rows, N, 2); a CUDA graph runs every row."""
        rows = self.size if self.graph else len(self.rows)
        params = {k: p[:rows] for k, p in self.params.items()}
        return run_stacked(self.model, params, x.expand(rows, -1, -1))


def stacked_step(args, specs, model, params, opt, slots, extraction=None):
    """step(x_buf (seeds, B, n), y_buf) for train_blocks: section 5's student_loss for every student
    on its seed's batch, against labels or its scheduled checkpoint; extract adds section 8's."""
    seed_idx = torch.tensor([args.seed_list.index(sp["seed"]) for sp in specs], device=args.device)
    kinds = [sp["method"] if sp["method"] in ("ce", "extract") else "distill" for sp in specs]
    starts = [i for i in range(len(kinds)) if i == 0 or kinds[i] != kinds[i - 1]]
    groups = [(kinds[a], slice(a, b)) for a, b in zip(starts, starts[1:] + [len(kinds)])]

    def step(x_buf, y_buf):
        x, y = x_buf[seed_idx], y_buf[seed_idx]  # (S, B, n), (S, B)
        if slots is not None:  # (rows, seeds, B, 2): every active checkpoint on every seed's batch
            t_all = slots.logits(x_buf.flatten(0, 1)).view(-1, *y_buf.shape, 2)
            t_logits = t_all[slots.row_of_student, seed_idx]  # (S, B, 2): each student's teacher
        targets = torch.cat([student_targets(y[s], None if kind == "ce" else t_logits[s],
                                             args.temperature) for kind, s in groups])
        loss = student_loss(run_stacked(model, params, x), targets)  # (S,)
        if extraction is not None:  # its students (the last group) have a loss of their own
            s = next(s for kind, s in groups if kind == "extract")
            loss = torch.cat([loss[:s.start], extraction.loss(s, loss[s], seed_idx[s], opt.t)])
        loss.sum().backward()  # students are independent: the sum gives each its own gradient
        opt.step()
        return loss.detach()
    return step


def train_students(args, specs, heldout):
    """Train all students together; return their eval history. Resumable (students_state.pt)."""
    methods = list(dict.fromkeys(sp["method"] for sp in specs))
    saved = common.saved_steps(teacher_ckpt(args.teacher_dir or args.out))
    slots = TeacherSlots(args, specs, saved) if methods != ["ce"] else None
    models = [make_model(args, "student", sp["seed"]) for sp in specs]
    model, params = models[0], stack(models, args)
    extraction = None
    if "extract" in methods:  # its loss reads the hidden layers of the students and the teachers
        extraction = Extraction(args, args.teacher_dir or args.out, saved[-1],
                                record_hidden(model), record_hidden(slots.model))
    opt = Optimizer(params.values(), args.optim, [sp["lr"] for sp in specs], args.beta_pair)
    gens = [generator(args.device, s, 2) for s in args.seed_list]
    state = resume(args, "student", STUDENTS_STATE)
    if "tensors" in state:  # the students' parameters, optimizer and data streams
        with torch.no_grad():
            for mine, value in zip(opt.params + opt.tensors(), state["tensors"]):
                mine.copy_(value)
        for g, value in zip(gens, state["gens"]):
            g.set_state(value.cpu())
    start, history = state["step"], state.get("history", {"steps": [], "acc": []})
    names = [f"{sp['method']}/lr={sp['lr']:g}/seed={sp['seed']}" for sp in specs]
    refresh = slots.refresh if slots else lambda t: None  # CE: no teacher
    refresh(start)  # the first step's teachers, loaded before a CUDA graph captures it
    sched = (args.schedule, args.warmup, args.floor)
    step = stacked_step(args, specs, model, params, opt, slots, extraction)
    blocks = train_blocks(args, "students", start, args.steps, sched, opt, gens, args.batch, step,
                          refresh)
    first = [(0, None)] if start == 0 else []  # step 0: the init, untrained
    for step_no, losses in itertools.chain(first, blocks):
        model.eval()
        acc, _ = evaluate(lambda x: run_stacked(model, params, x.expand(len(specs), -1, -1)),
                          *heldout)
        model.train()
        history["steps"].append(step_no)
        history["acc"].append(acc)
        record = {"role": "student", "step": step_no, "acc": dict(zip(names, acc))}
        if losses:
            record["train_loss"] = dict(zip(names, losses))
        common.append_jsonl(os.path.join(args.out, "metrics.jsonl"), record)
        if losses and (step_no % args.save_every == 0 or step_no == args.steps):
            state = {"tensors": opt.params + opt.tensors(), "step": step_no, "history": history,
                     "gens": [g.get_state() for g in gens]}  # parameters, optimizer, data streams
            common.save_checkpoint(state, os.path.join(args.out, STUDENTS_STATE))
        if losses and (step_no % (10 * args.eval_every) == 0 or step_no == args.steps):
            best = {m: round(max(a for a, sp in zip(acc, specs) if sp["method"] == m), 3)
                    for m in methods}
            print(f"students step {step_no:>9d}  best acc {best}", flush=True)
    return history


# --------------------------------------------------------------------------------------------------
# 7. The probe (Sec. 3.2, Fig. 3 middle): |E[chi_A(x) p(class 1 | x)]| for every in-support monomial
# A of degree 1..k-1 and for random off-support monomials. A checkpoint inside the teacher's phase
# transition correlates with in-support monomials far above the off-support level: the curriculum.

def monomials(args):
    """{degree: (in-support index lists, off-support ones)}; the off-support ones fixed by seed."""
    rng, support, out = random.Random(1234), set(args.support), {}
    for d in range(1, args.k):
        inside = [list(a) for a in itertools.combinations(args.support, d)]
        outside, tries = [], 0
        while len(outside) < args.probe_off and tries < 100 * args.probe_off:  # n - k at degree 1
            a = sorted(rng.sample(range(args.n), d))
            tries += 1
            if not set(a) <= support and a not in outside:
                outside.append(a)
        out[d] = (inside, outside)
    return out


def correlations(p, x, sets):
    """|mean_x chi_A(x) p(x)| for each index list A in `sets`; p (N,), x (N, n)."""
    chi = x[:, torch.tensor(sets, device=x.device)].prod(-1)  # all of one degree: (N, m)
    return ((p.double() @ chi.double()) / len(x)).abs().cpu().tolist()


@torch.no_grad()
def run_probe(args):
    """The probe at every saved teacher checkpoint (probe.json, for --resume); auto_ckpt (--ckpt
    auto): the one whose in-support correlations stand highest above the off-support ones."""
    path = os.path.join(args.out, "probe.json")
    if args.resume and os.path.exists(path):
        return common.read_json(path)
    run = args.teacher_dir or args.out
    steps = common.saved_steps(teacher_ckpt(run))
    x, y = sample(generator(args.device, args.teacher_seed, 4), (args.probe_samples,), args.n,
                  args.support)
    mons, name = monomials(args), lambda a: ",".join(map(str, a))
    model = make_model(args, "teacher").eval()
    res = {"steps": steps, "acc": [], "score": [], "degrees": {
        str(d): {"in_support": {name(a): [] for a in inside}, "off_mean": [], "off_std": []}
        for d, (inside, _) in mons.items()}}
    for step in steps:
        model.load_state_dict(load_teacher(run, step, args.device)["model"])
        p = torch.cat([torch.softmax(model(x[i:i + 4096]).float(), -1)[:, 1]
                       for i in range(0, len(x), 4096)])
        res["acc"].append(((p > 0.5).long() == y).float().mean().item())
        for d, (inside, outside) in mons.items():
            entry = res["degrees"][str(d)]
            for a, c in zip(inside, correlations(p, x, inside)):
                entry["in_support"][name(a)].append(c)
            off = common.mean_std(correlations(p, x, outside))
            entry["off_mean"].append(off[0])
            entry["off_std"].append(off[1])
        res["score"].append(max(in_over_off(res, d, -1) for d in mons))  # at the best degree
    best = max(range(len(steps)), key=lambda i: res["score"][i])
    res["auto_ckpt"] = steps[best]
    res["auto_degree"] = max(mons, key=lambda d: in_over_off(res, d, best))
    common.write_json(res, path)
    return res


def in_over_off(probe, d, i):
    """Mean in-support correlation over off-support mean, degree d, checkpoint index i."""
    e = probe["degrees"][str(d)]
    inside = sum(v[i] for v in e["in_support"].values()) / len(e["in_support"])
    return inside / max(e["off_mean"][i], 1e-12)


def fig3_checkpoints(probe, inside):
    """Stage-1 checkpoints before, inside (two_shot's) and after the transition (Fig. 3 right): half
    its step; it; halfway from the teacher's first 99% to its final step."""
    steps, t99 = probe["steps"], common.steps_to(probe["steps"], probe["acc"], 0.99)
    nearest = lambda t: min(steps, key=lambda s: abs(s - t))
    after = ((t99 if t99 is not None else steps[-1]) + steps[-1]) / 2
    return [nearest(inside / 2), inside, nearest(after)]


# --------------------------------------------------------------------------------------------------
# 8. Curriculum extraction (beyond the paper: Gupta & Karmalkar 2025, arXiv 2503.17494): from the
# final teacher alone, stage 1 fits the students' hidden layers to a random projection of its.

def record_hidden(model):
    """A list that holds the hidden representations of model's latest forward (forward hooks): the
    MLP's hidden layer (post-ReLU); each Transformer block's output (the last: last position)."""
    layers = [model.act] if isinstance(model, MLP) else list(model.blocks)
    store = [None] * len(layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda module, inputs, out, i=i: store.__setitem__(i, out))
    return store


class Extraction:
    """Stage 1 layer by layer, then stage 2 distils on the final teacher's outputs (as one-shot).
    Its exact loss and sizes we did not find; ours, measured on the cpu MLP: P (d_teacher x
    d_student) ~ N(0, 1/d_teacher), one per layer and seed; targets standardised per unit on
    STATS_SAMPLES fresh samples; loss mean((h - target)^2) / mean(target^2); post-ReLU; 500 steps
    (docs/parity.md). Transformer: `layers` equal sub-stages, the l-th on block l's output."""

    def __init__(self, args, run_dir, final_step, student_hidden=None, teacher_hidden=None):
        teacher = make_model(args, "teacher").eval()
        teacher.load_state_dict(load_teacher(run_dir, final_step, args.device)["model"])
        hidden = record_hidden(teacher)
        x, _ = sample(generator(args.device, args.teacher_seed, 5), (STATS_SAMPLES,), args.n,
                      args.support)
        with torch.no_grad():
            teacher(x)  # hidden: per layer (N, [n,] d_teacher)
        d = args.student_width if args.arch == "mlp" else args.student_heads * args.student_head_dim
        gens = [torch.Generator().manual_seed(999 + s) for s in args.seed_list]
        self.P = [torch.stack([torch.randn(h.shape[-1], d, generator=g) / math.sqrt(h.shape[-1])
                               for g in gens]).to(args.device)
                  for h in hidden]  # per layer: (seeds, d_teacher, d)
        z = [torch.einsum("...i,sio->s...o", h, P) for h, P in zip(hidden, self.P)]
        self.mu, self.sd = [t.mean(1) for t in z], [t.std(1) for t in z]  # per unit and position
        self.steps = args.extract_steps
        self.student_hidden, self.teacher_hidden = student_hidden, teacher_hidden  # record_hidden

    def stage1_loss(self, t_hidden, s_hidden, seed_idx, t):
        """(S,) normalised MSEs at layer l = floor(t x layers / --extract_steps); the teacher's
        last row (t_hidden: (rows, seeds x B, ...) per layer) is the final one."""
        now, out = torch.div(t * len(self.P), max(1, self.steps), rounding_mode="floor"), 0
        for l, (th, sh, P) in enumerate(zip(t_hidden, s_hidden, self.P)):
            z = torch.einsum("s...i,sio->s...o", th[-1].view(len(P), -1, *th.shape[2:]), P)
            z = ((z - self.mu[l][:, None]) / self.sd[l][:, None])[seed_idx]  # (S, B, [n,] d)
            mse = ((sh - z) ** 2).flatten(1).mean(-1) / (z ** 2).flatten(1).mean(-1)
            out = out + torch.where(now == l, mse, 0.0)
        return out

    def loss(self, s, oneshot_loss, seed_idx, t):
        """The extract students' (slice s of the stack) losses: stage 1 for --extract_steps steps
        (t, the optimizer's step count, is a tensor: one CUDA graph for both), then one-shot's."""
        s_hidden = [h[s] for h in self.student_hidden]
        stage1 = self.stage1_loss(self.teacher_hidden, s_hidden, seed_idx, t)
        return torch.where(t < self.steps, stage1, oneshot_loss)


# --------------------------------------------------------------------------------------------------
# 9. Results: table, claim checks (results.json), figures (Fig. 1, 3; docs/parity_extra.py: more).

def summarize_students(args, specs, history):
    """Per method: per-lr results, and the best lr (fewest mean steps to 90%, unreached counted as
    the budget; ties broken by final accuracy): the paper reports each method tuned."""
    out = {}
    budget = lambda r: sum(args.steps if s is None else s for s in r["steps_to"]["0.9"])
    for method in dict.fromkeys(sp["method"] for sp in specs):
        by_lr, curves = {}, {}
        for lr in args.lrs:
            idx = [i for i, sp in enumerate(specs) if sp["method"] == method and sp["lr"] == lr]
            curves[lr] = [[row[i] for row in history["acc"]] for i in idx]
            steps_to = {str(th): [common.steps_to(history["steps"], c, th) for c in curves[lr]]
                        for th in THRESHOLDS}
            by_lr[f"{lr:g}"] = {"lr": lr, "seeds": [specs[i]["seed"] for i in idx],
                                "final_acc": [c[-1] for c in curves[lr]], "steps_to": steps_to}
        best = min(by_lr.values(), key=lambda r: (budget(r), -sum(r["final_acc"])))
        stage1 = next(sp["stage1"] for sp in specs if sp["method"] == method)
        out[method] = {**best, "acc": curves[best["lr"]], "by_lr": by_lr, "stage1": stage1}
    return out


def fmt_steps(values, budget):
    m, sd = common.mean_std([budget if v is None else v for v in values])
    hit = sum(v is not None for v in values)
    reached = "" if hit == len(values) else f" ({hit}/{len(values)} reached)"
    return f"{m:.0f} ± {sd:.0f}" + reached


def label(method, r):  # in the table and Fig. 3: two_shot methods name their stage-1 checkpoint
    return method + (f" (ckpt {r['stage1']})" if r.get("stage1") is not None else "")


def print_table(results, args):
    rows, t = [], results.get("teacher")
    if t:
        steps_to = t["steps_to"].values()
        rows.append(["teacher", f"{args.teacher_lr:g}", *steps_to, f"{t['final_acc']:.3f}"])
    for method, r in results.get("students", {}).items():
        m, sd = common.mean_std(r["final_acc"])
        rows.append([label(method, r), f"{r['lr']:g}", fmt_steps(r["steps_to"]["0.9"], args.steps),
                     fmt_steps(r["steps_to"]["0.95"], args.steps), f"{m:.3f} ± {sd:.3f}"])
    headers = ["method", "lr", "steps to 90%", "steps to 95%", "final acc"]
    print("\n" + common.format_table(headers, rows))  # rows: every mode has a teacher or students


def claim_checks(results, args):
    """The README's acceptance checks, from this run (per seed, each method at its best lr)."""
    st, checks = results.get("students", {}), {}
    budget = lambda v: args.steps if v is None else v
    fast = [m for m in ("progressive", "two_shot") if m in st]
    slow = [m for m in ("ce", "oneshot") if m in st]
    if fast and slow:
        checks["half_the_steps_every_seed"] = all(
            budget(f) <= 0.5 * budget(s) for a in fast for b in slow
            for f, s in zip(st[a]["steps_to"]["0.9"], st[b]["steps_to"]["0.9"]))
    if probe := results.get("probe"):
        chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
        i = probe["steps"].index(chosen)
        ratios = {d: in_over_off(probe, int(d), i) for d in probe["degrees"]}
        final = {d: in_over_off(probe, int(d), -1) for d in probe["degrees"]}
        checks["chosen_ckpt_in_over_off"], checks["final_ckpt_in_over_off"] = ratios, final
        # --ckpt auto picks the ratio's maximum; chosen_ckpt_3x: a curriculum checkpoint exists in
        # training (Sec. 3.2: not step 0, not the last); the next: the final lost it (Fig. 3 middle)
        inside = 0 < chosen < probe["steps"][-1]
        checks["chosen_ckpt_3x"] = inside and max(ratios.values()) >= 3
        checks["final_ckpt_3x_below_chosen"] = max(final.values()) * 3 <= max(ratios.values())
    return checks


def make_figures(results, args):
    st, teacher, probe = results.get("students", {}), results.get("teacher"), results.get("probe")
    fig, ax = common.plt().subplots(figsize=(6, 4))  # Fig. 1 left / middle: every mode has one
    if teacher:
        ax.plot(teacher["steps"], teacher["acc"], "--", color="k", label="teacher")
    plot_students(ax, results, ("ce", "oneshot", "progressive", "two_shot", "extract"),
                  lambda m, r: f"{m} (lr {r['lr']:g})")
    ax.set(xlabel="training steps",
           title=f"{args.arch.upper()} on ({args.n},{args.k})-sparse parity")
    save(fig, args.out, "fig1_accuracy.png")
    if probe:  # Fig. 3: the teacher, the probe at its best degree, (2,T)-progressive students
        chosen = results.get("two_shot_ckpt", probe["auto_ckpt"])
        two_shots = [m for m in ("two_shot_before", "two_shot", "two_shot_after") if m in st]
        cols = 3 if two_shots else 2
        fig, axes = common.plt().subplots(1, cols, figsize=(5 * cols, 4))
        axes[0].plot(probe["steps"], probe["acc"], "k-")
        for name, s in zip(("before", "inside", "after"), results.get("fig3_ckpts", [chosen])):
            axes[0].plot(s, probe["acc"][probe["steps"].index(s)], "o", label=f"{name}: {s}")
        axes[0].set(xlabel="teacher steps", ylabel="accuracy", title="teacher accuracy, candidates")
        axes[0].legend(fontsize=8)
        plot_degree(axes[1], probe, probe["auto_degree"], chosen)
        if two_shots:
            plot_students(axes[2], results, two_shots + ["oneshot"], label)
            axes[2].axvline(args.T, color="gray", ls=":", lw=1)
            axes[2].set(xlabel="student steps", title=f"(2,{args.T})-progressive")
        save(fig, args.out, "fig3_curriculum.png")


def plot_students(ax, results, methods, name):  # each method's best lr: mean, min..max over seeds
    st = results.get("students", {})
    for m in [m for m in methods if m in st]:  # one-shot dotted: at temperature ~0 it can be CE
        common.plot_band(ax, results["student_steps"], st[m]["acc"], name(m, st[m]),
                         f"C{STUDENTS.index(m)}", ":" if m == "oneshot" else "-")  # tab: colors
    ax.set(ylabel="held-out accuracy", ylim=(0.4, 1.02))
    ax.legend(fontsize=8)


def save(fig, folder, name):
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=120)
    common.plt().close(fig)


def plot_degree(ax, probe, d, chosen):
    """Fig. 3 middle: in-support correlations of degree d against the off-support mean ± std."""
    e = probe["degrees"][str(d)]
    few = len(e["in_support"]) <= 6  # a legend entry each
    for name, vals in e["in_support"].items():
        ax.plot(probe["steps"], vals, lw=1, label="{" + name + "}" if few else None)
    m, sd = torch.tensor(e["off_mean"]), torch.tensor(e["off_std"])
    ax.plot(probe["steps"], m, "k--", lw=1, label="off-support mean ± std")
    ax.fill_between(probe["steps"], (m - sd).clamp(min=0), m + sd, color="gray", alpha=0.3, lw=0)
    ax.axvline(chosen, color="gray", ls=":", lw=1)
    ax.set(xlabel="teacher steps", ylabel="|E[chi_A(x) p(x)]|", title=f"degree-{d} monomials")
    ax.legend(fontsize=7)


# --------------------------------------------------------------------------------------------------
# 10. Main: teacher -> probe -> students -> results.

def config_of(args):  # config.json: every flag but --resume and --halt_at, not validate()'s lists
    skip = {"resume", "halt_at", "lrs", "seed_list", "beta_pair"}
    return {k: v for k, v in vars(args).items() if k not in skip}


def start_run(args):
    """Seeds, the run folder (config.json) and the held-out set (docs/parity_sweep.py's too)."""
    torch.manual_seed(args.teacher_seed)  # dropout masks; everything else uses its own generator
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    common.prepare_run_dir(args.out, config_of(args), args.resume)
    return sample(generator(args.device, 12345, 3), (args.eval_size,), args.n, args.support)


def main(argv=None):
    args = parse_args(argv)
    heldout = start_run(args)
    results, t_start = {"config": config_of(args)}, time.time()
    if args.mode != "ce" or args.teacher_dir is not None:  # all but CE students need a teacher
        if args.teacher_dir is None:
            train_teacher(args, heldout)
        run = args.teacher_dir or args.out  # accuracies from the log: every checkpoint costs GBs
        steps = common.saved_steps(teacher_ckpt(run))
        accs = [r["acc"] for r in common.read_jsonl(os.path.join(run, "metrics.jsonl"))
                if r["role"] == "teacher" and r["step"] in steps]
        steps_to = {str(th): common.steps_to(steps, accs, th) for th in THRESHOLDS}
        results["teacher"] = dict(steps=steps, acc=accs, final_acc=accs[-1], steps_to=steps_to)
    if args.mode in ("all", "probe") or (args.mode == "two_shot" and args.ckpt == "auto"):
        results["probe"] = run_probe(args)
    if args.mode in ("all", "two_shot"):
        auto = args.ckpt == "auto"
        results["two_shot_ckpt"] = results["probe"]["auto_ckpt"] if auto else int(args.ckpt)
        print(f"two_shot: stage-1 checkpoint {results['two_shot_ckpt']}, the final from T={args.T}")
    methods = {"all": STUDENTS, "teacher": [], "probe": []}.get(args.mode, [args.mode])
    stage1 = {"two_shot": results.get("two_shot_ckpt")}
    if "two_shot_before" in methods:  # Fig. 3 right's controls
        results["fig3_ckpts"] = fig3_checkpoints(results["probe"], results["two_shot_ckpt"])
        stage1["two_shot_before"], _, stage1["two_shot_after"] = results["fig3_ckpts"]
    if methods:
        specs = [{"method": m, "lr": lr, "seed": seed, "stage1": stage1.get(m)}  # same seed:
                 for m in methods for lr in args.lrs for seed in args.seed_list]  # same init, data
        history = train_students(args, specs, heldout)
        results["student_steps"] = history["steps"]
        results["students"] = summarize_students(args, specs, history)
    results["checks"], results["measured"] = common.split_checks(claim_checks(results, args))
    common.write_json(results, os.path.join(args.out, "results.json"))
    print_table(results, args)
    if results["checks"]:
        print("\nchecks:", results["checks"])
    make_figures(results, args)
    print(f"\nwrote results.json and figures to {args.out}/ in {time.time() - t_start:.0f}s")
    return results


if __name__ == "__main__":
    main()
